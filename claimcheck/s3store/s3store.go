// Package s3store is the claim-check Store that keeps payloads in an
// S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...), for payloads the
// outbox database should not hold. It is a subpackage so that a writer using
// the Postgres store does not link an S3 client.
//
// Put uploads the object before the writer's transaction commits, so a
// transaction that rolls back leaves an orphan object no event references.
// Clean orphans (and referenced payloads past their use) with a bucket
// lifecycle rule that expires the store's prefix after the outbox's retention;
// ExpireAfter sets one.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/lifecycle"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/sql"
)

// Scheme is the scheme of the references this store makes: "s3://bucket/key".
const Scheme = "s3"

// Config configures a Store.
type Config struct {
	// Endpoint is the S3 API's host:port ("s3.eu-west-1.amazonaws.com",
	// "127.0.0.1:9000"). Required.
	Endpoint string
	// Bucket holds the payloads; it must exist. Required for Put; a store that
	// only reads takes the bucket from each reference.
	Bucket string
	// Prefix is prepended to object keys. Defaults to "claim-check/".
	Prefix string
	// AccessKey and SecretKey sign requests. Defaults to none: the
	// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables.
	AccessKey, SecretKey string
	// Region of the bucket. Defaults to none (the server's).
	Region string
	// Insecure uses plain HTTP instead of HTTPS. Defaults to false.
	Insecure bool
}

// Store is the S3-compatible claim-check store.
type Store struct {
	cfg    Config
	client *minio.Client
}

// New validates cfg and returns the store. It does not contact the server.
func New(cfg Config) (*Store, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("claimcheck: s3 store: Endpoint is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "claim-check/"
	}
	creds := credentials.NewEnvAWS()
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region})
	if err != nil {
		return nil, fmt.Errorf("claimcheck: s3 store: %w", err)
	}
	return &Store{cfg: cfg, client: c}, nil
}

// Scheme returns Scheme.
func (s *Store) Scheme() string { return Scheme }

// Put uploads payload as <Prefix><event_id>. tx is ignored: the upload is not
// part of the writer's transaction (see the package doc on orphans).
func (s *Store) Put(ctx context.Context, _ sql.DBTX, eventID uuid.UUID, payload []byte) (claimcheck.Ref, error) {
	if s.cfg.Bucket == "" {
		return claimcheck.Ref{}, errors.New("claimcheck: s3 put: the store has no Bucket")
	}
	key := s.cfg.Prefix + eventID.String()
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, key, bytes.NewReader(payload), int64(len(payload)),
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return claimcheck.Ref{}, fmt.Errorf("claimcheck: s3 put %s/%s: %w", s.cfg.Bucket, key, err)
	}
	return claimcheck.NewRef(URI(s.cfg.Bucket, key), payload), nil
}

// Get downloads the object ref names. A missing object or bucket gives
// claimcheck.ErrNotFound.
func (s *Store) Get(ctx context.Context, ref claimcheck.Ref) ([]byte, error) {
	bucket, key, err := Parse(ref.URI)
	if err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.getErr(ref, err)
	}
	defer obj.Close()
	// Read one byte past the expected size so an oversized object is caught
	// by the digest check without reading all of it.
	b, err := io.ReadAll(io.LimitReader(obj, ref.Size+1))
	if err != nil {
		return nil, s.getErr(ref, err)
	}
	return b, nil
}

func (s *Store) getErr(ref claimcheck.Ref, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey, minio.NoSuchBucket:
		return fmt.Errorf("claimcheck: %s: %w", ref.URI, claimcheck.ErrNotFound)
	}
	return fmt.Errorf("claimcheck: s3 get %s: %w", ref.URI, err)
}

// ExpireAfter sets the bucket's lifecycle rule that deletes objects under the
// store's prefix days after upload: what removes orphans of rolled-back
// transactions. Choose at least the outbox's retention plus the longest a
// consumer may lag. It replaces the bucket's lifecycle configuration.
func (s *Store) ExpireAfter(ctx context.Context, days int) error {
	cfg := lifecycle.NewConfiguration()
	cfg.Rules = []lifecycle.Rule{{
		ID:         "outbox-claim-check-expiry",
		Status:     "Enabled",
		RuleFilter: lifecycle.Filter{Prefix: s.cfg.Prefix},
		Expiration: lifecycle.Expiration{Days: lifecycle.ExpirationDays(days)},
	}}
	if err := s.client.SetBucketLifecycle(ctx, s.cfg.Bucket, cfg); err != nil {
		return fmt.Errorf("claimcheck: s3 set lifecycle on %s: %w", s.cfg.Bucket, err)
	}
	return nil
}

// URI is the reference of an object: "s3://bucket/key".
func URI(bucket, key string) string { return Scheme + "://" + bucket + "/" + key }

// Parse splits an "s3://bucket/key" reference.
func Parse(uri string) (bucket, key string, err error) {
	u, perr := url.Parse(uri)
	if perr != nil || u.Scheme != Scheme || u.Host == "" || strings.TrimPrefix(u.Path, "/") == "" {
		return "", "", fmt.Errorf("claimcheck: %q is not an s3://bucket/key reference: %w", uri, claimcheck.ErrInvalidRef)
	}
	return u.Host, strings.TrimPrefix(u.Path, "/"), nil
}
