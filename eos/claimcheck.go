package eos

import (
	"bytes"
	"context"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/claimcheck"
)

// ClaimCheckError is the rejection of a record whose claim-check reference
// could not be resolved; it wraps the claimcheck sentinel (ErrNotFound,
// ErrDigestMismatch, ...). Its class in the dead-letter headers is that of
// the wrapped error.
type ClaimCheckError struct{ Err error }

func (e *ClaimCheckError) Error() string { return "resolve claim-check payload: " + e.Err.Error() }
func (e *ClaimCheckError) Unwrap() error { return e.Err }

// DecodeError is the rejection of a record whose wire-format value
// Config.Decoder could not decode; its dead-letter class is "schema". One
// that wraps schema.ErrRegistry (the registry did not answer) is not a
// rejection: the transaction aborts and is retried.
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "decode value: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// headerGetter reads a record's headers, last value wins.
func headerGetter(r *kgo.Record) func(string) (string, bool) {
	return func(k string) (v string, ok bool) {
		for _, h := range r.Headers {
			if h.Key == k {
				v, ok = string(h.Value), true
			}
		}
		return v, ok
	}
}

// resolveClaim returns a copy of r whose value is the stored payload and
// whose headers lack the claim-check ones, when r carries a reference (ok).
func (s *Stage) resolveClaim(ctx context.Context, r *kgo.Record) (*kgo.Record, claimcheck.Ref, bool, error) {
	payload, ref, ok, err := s.cfg.ClaimCheck.ResolveHeaders(ctx, headerGetter(r), r.Value)
	if !ok {
		return r, ref, false, nil
	}
	if err != nil {
		return nil, ref, true, &ClaimCheckError{Err: err}
	}
	in := *r
	in.Value = payload
	in.Headers = make([]kgo.RecordHeader, 0, len(r.Headers))
	for _, h := range r.Headers {
		if !claimcheck.IsHeader(h.Key) {
			in.Headers = append(in.Headers, h)
		}
	}
	return &in, ref, true, nil
}

// forwardClaim puts the reference back on every output whose value is the
// resolved payload unchanged (an enriching or routing transform), so a large
// payload is not produced to Kafka whole. Outputs with another value go as
// the transform made them; one too large for the broker is dead-lettered as
// refused (eos does not store new payloads).
func forwardClaim(outs []*kgo.Record, payload []byte, ref claimcheck.Ref) []*kgo.Record {
	stub := ref.Stub()
	for _, o := range outs {
		if o == nil || int64(len(o.Value)) != ref.Size || !sameBytes(o.Value, payload) {
			continue
		}
		o.Value = stub
		hs := o.Headers[:0:0]
		for _, h := range o.Headers {
			if !claimcheck.IsHeader(h.Key) {
				hs = append(hs, h)
			}
		}
		for _, k := range []string{claimcheck.HeaderRef, claimcheck.HeaderSize, claimcheck.HeaderSHA256} {
			hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(ref.Headers()[k])})
		}
		o.Headers = hs
	}
	return outs
}

// sameBytes compares two payloads, first by identity (the transform passed
// the value on), then by content.
func sameBytes(a, b []byte) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return bytes.Equal(a, b)
}
