package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Signature sentinels, returned (wrapped) by verify; each answers 401.
var (
	// ErrSignatureMissing means the signature header is absent or empty.
	ErrSignatureMissing = errors.New("signature header missing")
	// ErrSignatureMalformed means the header is not in the preset's format.
	ErrSignatureMalformed = errors.New("signature header malformed")
	// ErrSignatureMismatch means no configured secret produces the signature.
	ErrSignatureMismatch = errors.New("signature does not match")
	// ErrTimestampOutsideTolerance means Stripe's signed timestamp is too far
	// from now: a replayed old request, or a clock off by more than the
	// tolerance.
	ErrTimestampOutsideTolerance = errors.New("signed timestamp outside tolerance")
)

// Header names the presets read.
const (
	headerStripeSignature = "Stripe-Signature"
	headerGitHubSignature = "X-Hub-Signature-256"
	headerGitHubEvent     = "X-GitHub-Event"
)

// verify checks the request's signature over body with s's secrets.
func (s *Source) verify(h http.Header, body []byte, now time.Time) error {
	switch s.Preset {
	case PresetStripe:
		return verifyStripe(s.Secrets, h.Get(headerStripeSignature), body, now, s.Tolerance)
	case PresetGitHub:
		return verifyPrefixed(s.Secrets, h.Get(headerGitHubSignature), "sha256=", "hex", body)
	default:
		return verifyPrefixed(s.Secrets, h.Get(s.Signature.Header), s.Signature.Prefix, s.Signature.Encoding, body)
	}
}

// verifyStripe checks a Stripe-Signature header: "t=TIMESTAMP,v1=HEX[,v1=HEX...]"
// where each v1 is HMAC-SHA256(secret, "TIMESTAMP.body") in hex. Any v1
// matching any secret passes (Stripe sends one per active secret while a
// secret is rolled); v0 and unknown schemes are ignored, as Stripe's
// libraries do.
func verifyStripe(secrets [][]byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if strings.TrimSpace(header) == "" {
		return fmt.Errorf("%w: %s", ErrSignatureMissing, headerStripeSignature)
	}
	var (
		ts   string
		sigs [][]byte
	)
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%w: %s part %q is not key=value", ErrSignatureMalformed, headerStripeSignature, part)
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if mac, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, mac)
			}
		}
	}
	if ts == "" {
		return fmt.Errorf("%w: %s has no t= timestamp", ErrSignatureMalformed, headerStripeSignature)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s timestamp %q is not Unix seconds", ErrSignatureMalformed, headerStripeSignature, ts)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: %s has no v1= signature", ErrSignatureMalformed, headerStripeSignature)
	}
	// Check the MAC before the time: a forged header learns nothing about
	// the tolerance.
	if !anyMAC(secrets, sigs, []byte(ts), []byte("."), body) {
		return ErrSignatureMismatch
	}
	if d := now.Sub(time.Unix(secs, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed at %s, %s from now, tolerance %s", ErrTimestampOutsideTolerance,
			time.Unix(secs, 0).UTC().Format(time.RFC3339), d.Round(time.Second), tolerance)
	}
	return nil
}

// verifyPrefixed checks a header holding PREFIX + MAC of the body, the MAC in
// hex or base64 (GitHub: "sha256=" + hex).
func verifyPrefixed(secrets [][]byte, header, prefix, encoding string, body []byte) error {
	header = strings.TrimSpace(header)
	if header == "" {
		return ErrSignatureMissing
	}
	enc, ok := strings.CutPrefix(header, prefix)
	if !ok {
		return fmt.Errorf("%w: want the prefix %q", ErrSignatureMalformed, prefix)
	}
	var (
		mac []byte
		err error
	)
	if encoding == "base64" {
		mac, err = base64.StdEncoding.DecodeString(enc)
	} else {
		mac, err = hex.DecodeString(enc)
	}
	if err != nil || len(mac) != sha256.Size {
		return fmt.Errorf("%w: not a %s-encoded SHA-256 MAC", ErrSignatureMalformed, encoding)
	}
	if !anyMAC(secrets, [][]byte{mac}, body) {
		return ErrSignatureMismatch
	}
	return nil
}

// anyMAC reports whether any of sigs is HMAC-SHA256(secret, parts...) for
// any secret. Every pair is compared in constant time and all are compared,
// so the time taken does not tell which secret or how much matched.
func anyMAC(secrets, sigs [][]byte, parts ...[]byte) bool {
	found := false
	for _, secret := range secrets {
		m := hmac.New(sha256.New, secret)
		for _, p := range parts {
			m.Write(p)
		}
		want := m.Sum(nil)
		for _, sig := range sigs {
			if hmac.Equal(want, sig) {
				found = true
			}
		}
	}
	return found
}
