package claimcheck

import "errors"

// Errors a Resolver or Store returns, for callers to branch on with errors.Is.
var (
	// ErrNotFound is returned when the reference names a payload the store
	// does not hold: pruned by retention (the event outlived its payload, or a
	// consumer is further behind than the retention), deleted, or never
	// committed.
	ErrNotFound = errors.New("claimcheck: stored payload not found (pruned by retention, deleted, or never committed)")
	// ErrDigestMismatch is returned when the stored bytes differ from the size
	// or SHA-256 digest the event carries: a corrupt or replaced payload.
	ErrDigestMismatch = errors.New("claimcheck: stored payload does not match the event's size and sha256")
	// ErrInvalidRef is returned when the claim-check headers are malformed.
	ErrInvalidRef = errors.New("claimcheck: invalid reference headers")
	// ErrNoStore is returned when the reference's scheme names a store the
	// Resolver was not given (an s3:// reference without an S3 store).
	ErrNoStore = errors.New("claimcheck: no store configured for the reference's scheme")
)
