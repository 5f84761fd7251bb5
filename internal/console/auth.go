package console

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
)

// Why every action goes through allow: the console is read-only unless the
// operator started it with --allow-actions, and then an action needs the
// token, so reaching the port is never enough to replay anything.

// refusedReadOnly is the 403 body of a console started without actions.
const refusedReadOnly = "this console is read-only: it was started without --allow-actions, so it changes nothing"

// allow reports whether r may run an action, and answers it when not:
// 403 without --allow-actions or for a cross-site request, 401 (with the
// schemes to use) without the right token.
func (s *Server) allow(w http.ResponseWriter, r *http.Request) bool {
	if !s.cfg.AllowActions {
		s.fail(w, r, http.StatusForbidden, refusedReadOnly,
			"restart it with `outbox console --allow-actions --token T` (or OUTBOX_CONSOLE_TOKEN) to replay from here, or use `outbox dlq replay`")
		return false
	}
	if crossSite(r) {
		s.fail(w, r, http.StatusForbidden, "cross-site request refused", "actions are accepted only from the console's own pages")
		return false
	}
	if !s.tokenOK(r) {
		// Only the sign-in page challenges with Basic: a browser that gets
		// a Basic challenge for a form post prompts instead of showing why.
		if r.Method == http.MethodGet {
			w.Header().Add("WWW-Authenticate", `Basic realm="outbox console", charset="UTF-8"`)
		}
		w.Header().Add("WWW-Authenticate", `Bearer realm="outbox console"`)
		s.fail(w, r, http.StatusUnauthorized, "this action needs the console's token",
			"send Authorization: Bearer TOKEN, or basic auth with the token as the password (any user name); in a browser, sign in at /actions first")
		return false
	}
	return true
}

// tokenOK checks the bearer token or the basic-auth password in constant time.
func (s *Server) tokenOK(r *http.Request) bool {
	var got string
	h := r.Header.Get("Authorization")
	if b, ok := strings.CutPrefix(h, "Bearer "); ok {
		got = strings.TrimSpace(b)
	} else if _, pw, ok := r.BasicAuth(); ok {
		got = pw
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) == 1
}

// crossSite reports a request a browser says came from another site, or
// whose Origin is not this host: a page elsewhere must not replay through a
// browser that holds the console's basic-auth credentials.
func crossSite(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return o == "null"
	}
	u, err := url.Parse(o)
	return err != nil || u.Host != r.Host
}

// unlock is GET /actions: it asks a browser for the token with basic auth,
// so the console's forms carry it afterwards.
func (s *Server) unlock(w http.ResponseWriter, r *http.Request) {
	if !s.allow(w, r) {
		return
	}
	s.render(w, r, http.StatusOK, "message", "Actions", Message{Status: http.StatusOK, Error: "actions unlocked",
		Explain: "this browser sends the token with the console's forms now; replays still show a dry run first"})
}

// refuseUnknownAction answers a POST to a path with no action: refused like
// any action first, then 404.
func (s *Server) refuseUnknownAction(w http.ResponseWriter, r *http.Request) {
	if !s.allow(w, r) {
		return
	}
	s.fail(w, r, http.StatusNotFound, "no action at "+r.URL.Path, "")
}
