package claimcheck

import (
	"context"
	"fmt"
	"strings"
)

// Resolver turns references back into payloads for the stages that read
// events: eos before the transform, sink before the HTTP call, `outbox dlq
// show`. It is safe for concurrent use.
type Resolver struct {
	stores map[string]Store
}

// NewResolver returns a Resolver reading from stores, one per scheme (a later
// store of the same scheme wins).
func NewResolver(stores ...Store) *Resolver {
	r := &Resolver{stores: make(map[string]Store, len(stores))}
	for _, s := range stores {
		if s != nil {
			r.stores[s.Scheme()] = s
		}
	}
	return r
}

// Schemes lists the schemes the Resolver reads, for logs.
func (r *Resolver) Schemes() []string {
	out := make([]string, 0, len(r.stores))
	for s := range r.stores {
		out = append(out, s)
	}
	return out
}

// Resolve fetches the payload ref names and checks it against the size and
// digest. Errors wrap ErrNoStore, ErrNotFound, ErrDigestMismatch or the
// store's own failure (a connection error: worth retrying).
func (r *Resolver) Resolve(ctx context.Context, ref Ref) ([]byte, error) {
	s, ok := r.stores[ref.Scheme()]
	if !ok {
		return nil, fmt.Errorf("claimcheck: %s: scheme %q (have %s): %w", ref.URI, ref.Scheme(), strings.Join(r.Schemes(), ", "), ErrNoStore)
	}
	b, err := s.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := ref.Verify(b); err != nil {
		return nil, err
	}
	return b, nil
}

// ResolveHeaders returns the payload of an event given its headers and
// value: the value itself when the event carries no reference (ok false),
// else the resolved payload and the reference.
func (r *Resolver) ResolveHeaders(ctx context.Context, get func(key string) (string, bool), value []byte) (payload []byte, ref Ref, ok bool, err error) {
	ref, ok, err = FromHeaders(get)
	if !ok || err != nil {
		return value, ref, ok, err
	}
	payload, err = r.Resolve(ctx, ref)
	return payload, ref, true, err
}
