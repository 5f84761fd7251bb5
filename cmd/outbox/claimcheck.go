package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/pflag"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/claimcheck/s3store"
	"github.com/outboxrelay/outbox/internal/ops/deadletter"
)

// claimCheckFlags select the claim-check stores a stage reads references
// from (docs/writer.md, "Claim-check"). The Postgres store reads through the
// sink's --database-url, or the --claim-check-database-url of transform and
// dlq show; S3 credentials come from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, never from a flag.
type claimCheckFlags struct {
	enabled    bool
	s3Endpoint string
	s3Region   string
	s3Insecure bool
}

func registerClaimCheckFlags(fs *pflag.FlagSet) *claimCheckFlags {
	f := &claimCheckFlags{}
	fs.BoolVar(&f.enabled, "claim-check", false, "resolve claim-check references (header outbox.claim-check) from the Postgres store (the database URL), and from S3 with --claim-check-s3-endpoint")
	fs.StringVar(&f.s3Endpoint, "claim-check-s3-endpoint", "", "S3-compatible host:port for s3:// references (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
	fs.StringVar(&f.s3Region, "claim-check-s3-region", "", "S3 region for s3:// references")
	fs.BoolVar(&f.s3Insecure, "claim-check-s3-insecure", false, "plain HTTP to the S3 endpoint (a local test server)")
	return f
}

// on reports whether any store was asked for.
func (f *claimCheckFlags) on() bool { return f.enabled || f.s3Endpoint != "" }

// resolver opens the stores. The Postgres one needs dbURL; close releases
// its pool. With no store asked for, it returns a nil Resolver.
func (f *claimCheckFlags) resolver(ctx context.Context, dbURL, schema string) (r *claimcheck.Resolver, closeFn func(), err error) {
	closeFn = func() {}
	if !f.on() {
		return nil, closeFn, nil
	}
	var stores []claimcheck.Store
	if f.enabled {
		if err := requireDatabaseURL(dbURL); err != nil {
			return nil, closeFn, fmt.Errorf("%w: --claim-check reads the Postgres store from the database URL", errUsage)
		}
		pool, err := pgxpool.New(ctx, dbURL)
		if err != nil {
			return nil, closeFn, fmt.Errorf("%w: --database-url: %v", errUsage, err)
		}
		closeFn = pool.Close
		pg, err := claimcheck.NewPostgres(claimcheck.PostgresConfig{Schema: schema, DB: pool})
		if err != nil {
			pool.Close()
			return nil, func() {}, fmt.Errorf("%w: %v", errUsage, err)
		}
		stores = append(stores, pg)
	}
	if f.s3Endpoint != "" {
		s3, err := s3store.New(s3store.Config{Endpoint: f.s3Endpoint, Region: f.s3Region, Insecure: f.s3Insecure})
		if err != nil {
			closeFn()
			return nil, func() {}, fmt.Errorf("%w: %v", errUsage, err)
		}
		stores = append(stores, s3)
	}
	return claimcheck.NewResolver(stores...), closeFn, nil
}

// letterClaim is what `outbox dlq show` found out about a dead letter's
// claim-check reference.
type letterClaim struct {
	ref      claimcheck.Ref // URI empty: the record carries no reference
	resolved bool
	payload  []byte
	err      error // why it is not resolved; nil with no resolver
}

// resolveLetter reads l's reference and, with a resolver, its payload.
func resolveLetter(ctx context.Context, r *claimcheck.Resolver, l deadletter.Letter) letterClaim {
	get := func(k string) (v string, ok bool) {
		for _, h := range l.Record.Headers {
			if h.Key == k {
				v, ok = string(h.Value), true
			}
		}
		return v, ok
	}
	ref, ok, err := claimcheck.FromHeaders(get)
	if !ok {
		return letterClaim{}
	}
	c := letterClaim{ref: ref, err: err}
	if ref.URI == "" {
		c.ref.URI = "(empty)"
	}
	if err != nil || r == nil {
		return c
	}
	if c.payload, c.err = r.Resolve(ctx, ref); c.err == nil {
		c.resolved = true
	}
	return c
}

// describe is the claim-check line of the text output.
func (c letterClaim) describe() string {
	s := fmt.Sprintf("%s (%d bytes, sha256 %s)", c.ref.URI, c.ref.Size, c.ref.SHA256)
	switch {
	case c.resolved:
		return s + ": resolved, the value below is the stored payload"
	case c.err != nil:
		return s + ": not resolved: " + c.err.Error()
	}
	return s + ": not resolved; pass --claim-check --claim-check-database-url (or --claim-check-s3-endpoint) to show the payload"
}

// claimJSON is the claim-check part of the JSON output.
type claimJSON struct {
	Ref      string `json:"ref"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Resolved bool   `json:"resolved"`
	Error    string `json:"error,omitempty"`
}

func (c letterClaim) json() *claimJSON {
	if c.ref.URI == "" {
		return nil
	}
	j := &claimJSON{Ref: c.ref.URI, Size: c.ref.Size, SHA256: c.ref.SHA256, Resolved: c.resolved}
	if c.err != nil {
		j.Error = c.err.Error()
	}
	return j
}
