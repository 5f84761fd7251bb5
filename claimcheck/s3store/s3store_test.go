package s3store_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/claimcheck/s3store"
)

const (
	accessKey = "outboxtest"
	secretKey = "outboxtest-secret"
)

// server is a real MinIO server on loopback, one per test binary. The tests
// run one after another (no t.Parallel): they share it, and it starts in
// half a second.
type server struct {
	endpoint string
	cmd      *exec.Cmd
	logs     *bytes.Buffer
	data     string
}

var srv *server

func TestMain(m *testing.M) {
	code := m.Run()
	if srv != nil {
		_ = srv.cmd.Process.Kill()
		_ = srv.cmd.Wait()
		_ = os.RemoveAll(srv.data)
	}
	os.Exit(code)
}

// startServer builds (first time only) and starts the MinIO server with
// scripts/ensure-minio.sh; the test fails, saying how to install it, when it
// cannot be had.
func startServer(t *testing.T) *server {
	t.Helper()
	if srv != nil {
		return srv
	}
	out, err := exec.Command("bash", "../../scripts/ensure-minio.sh").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("the S3 tests need a MinIO server: run `bash scripts/ensure-minio.sh` "+
			"(GOBIN=~/.cache/outbox/minio/bin go install github.com/minio/minio@<pinned version>): %v\n%s", err, stderr)
	}
	bin := strings.TrimSpace(string(out))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	data, err := os.MkdirTemp("", "outbox-minio-*")
	require.NoError(t, err)
	s := &server{endpoint: addr, logs: &bytes.Buffer{}, data: data}
	s.cmd = exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:0", filepath.Join(data, "data"))
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+accessKey, "MINIO_ROOT_PASSWORD="+secretKey,
		"MINIO_UPDATE=off", "MINIO_BROWSER=off", "MINIO_CALLHOME_ENABLE=off")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	require.NoError(t, s.cmd.Start())
	srv = s
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("MinIO at %s not ready within 30s:\n%s", addr, s.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bucket makes a new bucket and a store on it.
func bucket(t *testing.T) (*s3store.Store, *minio.Client, string) {
	t.Helper()
	s := startServer(t)
	name := fmt.Sprintf("cc-%d-%s", time.Now().UnixNano(), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 63 {
		name = name[:63]
	}
	name = strings.TrimRight(name, "-")
	c, err := minio.New(s.endpoint, &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, "")})
	require.NoError(t, err)
	require.NoError(t, c.MakeBucket(context.Background(), name, minio.MakeBucketOptions{}))
	store, err := s3store.New(s3store.Config{Endpoint: s.endpoint, Bucket: name, AccessKey: accessKey, SecretKey: secretKey, Insecure: true})
	require.NoError(t, err)
	return store, c, name
}

// TestPutGet: a payload round-trips through the real server by reference.
func TestPutGet(t *testing.T) {
	store, _, name := bucket(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	payload := bytes.Repeat([]byte("attachment "), 100_000) // 1.1 MB
	ref, err := store.Put(ctx, nil, id, payload)
	require.NoError(t, err)
	require.Equal(t, s3store.URI(name, "claim-check/"+id.String()), ref.URI)
	got, err := claimcheck.NewResolver(store).Resolve(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, payload, got)

	// The lifecycle rule that cleans orphans is accepted by the server.
	require.NoError(t, store.ExpireAfter(ctx, 8))
}

// TestDigestMismatch: an object replaced behind the reference is caught,
// whether its length changed or only its bytes.
func TestDigestMismatch(t *testing.T) {
	store, c, name := bucket(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	ref, err := store.Put(ctx, nil, id, []byte("the real attachment"))
	require.NoError(t, err)
	r := claimcheck.NewResolver(store)
	for _, forged := range []string{"the fake attachment", "a longer forged attachment than the real one"} {
		_, err = c.PutObject(ctx, name, "claim-check/"+id.String(), strings.NewReader(forged), int64(len(forged)), minio.PutObjectOptions{})
		require.NoError(t, err)
		_, err = r.Resolve(ctx, ref)
		require.ErrorIs(t, err, claimcheck.ErrDigestMismatch, forged)
	}
}

// TestMissing: a missing object, or a missing bucket, is ErrNotFound; a
// malformed reference is ErrInvalidRef.
func TestMissing(t *testing.T) {
	store, _, name := bucket(t)
	ctx := context.Background()
	r := claimcheck.NewResolver(store)
	_, err := r.Resolve(ctx, claimcheck.NewRef(s3store.URI(name, "claim-check/"+uuid.NewString()), []byte("x")))
	require.ErrorIs(t, err, claimcheck.ErrNotFound)
	_, err = r.Resolve(ctx, claimcheck.NewRef(s3store.URI("no-such-bucket-here", "k"), []byte("x")))
	require.ErrorIs(t, err, claimcheck.ErrNotFound)
	_, err = r.Resolve(ctx, claimcheck.NewRef("s3://", []byte("x")))
	require.ErrorIs(t, err, claimcheck.ErrInvalidRef)
}
