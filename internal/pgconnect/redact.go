package pgconnect

import (
	"net/url"
	"slices"
	"strings"
)

// mask replaces a password wherever Redact finds one (url.URL.Redacted's mask).
const mask = "xxxxx"

// secretKeys are the connection parameters whose values are secrets: the
// password and the passphrase of the client key.
var secretKeys = map[string]bool{"password": true, "sslpassword": true}

// Redact returns databaseURL with every password replaced by "xxxxx", in each
// form pgx accepts: a URL's user info (one for all hosts of a multi-host URL,
// postgres://u:p@h1:5432,h2:5433/db) and its password= or sslpassword= query
// parameters, and a key=value DSN's password and sslpassword values, quoted or
// not. It works on the text, not on a parse, so a malformed URL (the one an
// error message most needs to show) is redacted too. Anything else is returned
// unchanged.
func Redact(databaseURL string) string {
	out, _ := redact(databaseURL)
	return out
}

// redact returns the redacted text and the secrets it removed, as written and
// percent-decoded, so that text from elsewhere (a parser's error) can be
// scrubbed of them too.
func redact(s string) (string, []string) {
	if isURL(s) {
		return redactURL(s)
	}
	return redactDSN(s)
}

func isURL(s string) bool {
	t := strings.ToLower(strings.TrimSpace(s))
	return strings.HasPrefix(t, "postgres://") || strings.HasPrefix(t, "postgresql://")
}

func redactURL(s string) (string, []string) {
	var secrets []string
	start := strings.Index(s, "://") + len("://")
	rest := s[start:]
	// The user info ends at the last '@' before the query: a password with an
	// unescaped '@' or '/' is malformed, but still a password to hide.
	query := strings.IndexByte(rest, '?')
	beforeQuery := rest
	if query >= 0 {
		beforeQuery = rest[:query]
	}
	var b strings.Builder
	b.WriteString(s[:start])
	if at := strings.LastIndexByte(beforeQuery, '@'); at >= 0 {
		userinfo := rest[:at]
		if colon := strings.IndexByte(userinfo, ':'); colon >= 0 {
			secrets = addSecret(secrets, userinfo[colon+1:], true)
			userinfo = userinfo[:colon+1] + mask
		}
		b.WriteString(userinfo)
		rest = rest[at:]
		if query >= 0 {
			query -= at
		}
	}
	if query < 0 {
		b.WriteString(rest)
		return b.String(), secrets
	}
	b.WriteString(rest[:query+1])
	params := strings.Split(rest[query+1:], "&")
	for i, p := range params {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		if key, err := url.QueryUnescape(k); err == nil && secretKeys[strings.ToLower(key)] {
			secrets = addSecret(secrets, v, true)
			params[i] = k + "=" + mask
		}
	}
	b.WriteString(strings.Join(params, "&"))
	return b.String(), secrets
}

// redactDSN masks the secret values of a key=value DSN, following libpq's
// syntax: spaces around '=', values in single quotes with backslash escapes.
func redactDSN(s string) (string, []string) {
	var (
		b       strings.Builder
		secrets []string
	)
	i := 0
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' }
	for i < len(s) {
		// key
		for i < len(s) && isSpace(s[i]) {
			b.WriteByte(s[i])
			i++
		}
		keyStart := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[keyStart:i]
		b.WriteString(key)
		for i < len(s) && isSpace(s[i]) {
			b.WriteByte(s[i])
			i++
		}
		if i >= len(s) || s[i] != '=' {
			continue // not key=value: leave it as it is
		}
		b.WriteByte('=')
		i++
		for i < len(s) && isSpace(s[i]) {
			b.WriteByte(s[i])
			i++
		}
		// value
		valStart := i
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			for i < len(s) && s[i] != '\'' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
			if i < len(s) {
				i++ // closing quote
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		if secretKeys[strings.ToLower(key)] {
			secrets = addSecret(secrets, s[valStart:i], false)
			secrets = addSecret(secrets, val.String(), false)
			b.WriteString(mask)
		} else {
			b.WriteString(s[valStart:i])
		}
	}
	return b.String(), secrets
}

func addSecret(secrets []string, v string, unescape bool) []string {
	if v == "" || v == mask {
		return secrets
	}
	secrets = append(secrets, v)
	if unescape {
		if u, err := url.PathUnescape(v); err == nil && u != v {
			secrets = append(secrets, u)
		}
	}
	return secrets
}

// scrub removes the secrets from text that came from elsewhere (a parser's or
// driver's error), longest first so no part of a longer one survives.
func scrub(text string, secrets []string) string {
	sorted := slices.Clone(secrets)
	slices.SortFunc(sorted, func(a, b string) int { return len(b) - len(a) })
	for _, s := range sorted {
		text = strings.ReplaceAll(text, s, mask)
	}
	return text
}
