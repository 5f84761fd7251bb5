package claimcheck

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Headers of a claim-checked event. The writer sets all three; a reader
// resolves the reference and checks the other two.
const (
	// HeaderRef is the store URI of the payload: "pg:<event_id>" or
	// "s3://bucket/key".
	HeaderRef = "outbox.claim-check"
	// HeaderSize is the payload's length in bytes, in decimal.
	HeaderSize = "outbox.claim-check.size"
	// HeaderSHA256 is the payload's SHA-256 digest, in lower-case hex.
	HeaderSHA256 = "outbox.claim-check.sha256"
)

// IsHeader reports whether key is one of the claim-check headers, so a stage
// that replaces a reference by its payload can drop them.
func IsHeader(key string) bool {
	return key == HeaderRef || key == HeaderSize || key == HeaderSHA256
}

// Ref is a reference to a stored payload, as the headers carry it.
type Ref struct {
	// URI names the store and the payload in it ("pg:<event_id>", "s3://bucket/key").
	URI string
	// Size is the payload's length in bytes.
	Size int64
	// SHA256 is the payload's digest in lower-case hex.
	SHA256 string
}

// NewRef returns the reference to payload stored at uri.
func NewRef(uri string, payload []byte) Ref {
	sum := sha256.Sum256(payload)
	return Ref{URI: uri, Size: int64(len(payload)), SHA256: hex.EncodeToString(sum[:])}
}

// Scheme is the part of URI before the first ':' ("pg", "s3").
func (r Ref) Scheme() string {
	s, _, _ := strings.Cut(r.URI, ":")
	return s
}

// Headers returns the reference as the three header key/value pairs.
func (r Ref) Headers() map[string]string {
	return map[string]string{
		HeaderRef:    r.URI,
		HeaderSize:   strconv.FormatInt(r.Size, 10),
		HeaderSHA256: r.SHA256,
	}
}

// Stub is the small payload an event carries in place of a claim-checked one:
// a JSON object naming the reference, so a consumer that does not resolve
// references sees where the payload is instead of an empty value.
func (r Ref) Stub() []byte {
	b, _ := json.Marshal(struct {
		ClaimCheck string `json:"claim_check"`
		Size       int64  `json:"size"`
		SHA256     string `json:"sha256"`
	}{r.URI, r.Size, r.SHA256})
	return b
}

// Verify checks payload against the reference's size and digest. It returns
// an error wrapping ErrDigestMismatch when either differs.
func (r Ref) Verify(payload []byte) error {
	if int64(len(payload)) != r.Size {
		return fmt.Errorf("claimcheck: %s: stored payload is %d bytes, the event says %d: %w", r.URI, len(payload), r.Size, ErrDigestMismatch)
	}
	sum := sha256.Sum256(payload)
	if got := hex.EncodeToString(sum[:]); got != r.SHA256 {
		return fmt.Errorf("claimcheck: %s: stored payload has sha256 %s, the event says %s: %w", r.URI, got, r.SHA256, ErrDigestMismatch)
	}
	return nil
}

// FromHeaders reads a reference from an event's headers. ok is false when
// the event carries no reference (its value is the payload itself); err wraps
// ErrInvalidRef when the headers are there but malformed.
func FromHeaders(get func(key string) (string, bool)) (ref Ref, ok bool, err error) {
	uri, ok := get(HeaderRef)
	if !ok {
		return Ref{}, false, nil
	}
	size, _ := get(HeaderSize)
	digest, _ := get(HeaderSHA256)
	ref = Ref{URI: uri, SHA256: digest}
	switch n, perr := strconv.ParseInt(size, 10, 64); {
	case uri == "" || !strings.Contains(uri, ":"):
		return ref, true, fmt.Errorf("claimcheck: reference %q is not a store URI: %w", uri, ErrInvalidRef)
	case perr != nil || n < 0:
		return ref, true, fmt.Errorf("claimcheck: %s: header %s %q is not a size: %w", uri, HeaderSize, size, ErrInvalidRef)
	case !isHexDigest(digest):
		return ref, true, fmt.Errorf("claimcheck: %s: header %s %q is not a hex SHA-256: %w", uri, HeaderSHA256, digest, ErrInvalidRef)
	default:
		ref.Size = n
	}
	return ref, true, nil
}

// FromMap is FromHeaders over a map of headers.
func FromMap(h map[string]string) (Ref, bool, error) {
	return FromHeaders(func(k string) (string, bool) { v, ok := h[k]; return v, ok })
}

func isHexDigest(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
