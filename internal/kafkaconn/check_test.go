package kafkaconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// These tests run Check against kfake brokers (real Kafka protocol over real
// TCP and TLS, in process) for the TLS and reachability cases. SASL failures
// are tested only against Apache Kafka (cmd/outbox's TestSecureKafka*):
// kfake does not answer a failed SCRAM exchange the way Kafka does (the
// client waits for its timeout instead of getting SASL_AUTHENTICATION_FAILED).

const testPassword = "s3cret-Passw0rd-do-not-print"

// testCA is a CA and a broker certificate for 127.0.0.1 signed by it.
type testCA struct {
	caFile string
	server tls.Certificate
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), name+".pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	return testCA{caFile: path, server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// secureFake is a kfake broker that wants TLS and SCRAM-SHA-512.
func secureFake(t *testing.T, ca testCA, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{ca.server}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "outbox", testPassword),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func TestCheckExplainsEachBadSetting(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t, "test-ca"), newTestCA(t, "other-ca")
	secure := secureFake(t, ca).ListenAddrs()
	good := Config{Brokers: secure, TLS: true, TLSCAFile: ca.caFile, SASLMechanism: "SCRAM-SHA-512", SASLUser: "outbox", SASLPassword: testPassword}

	for _, c := range []struct {
		name   string
		edit   func(*Config)
		want   error
		saying string
	}{
		{"good settings", func(*Config) {}, nil, ""},
		{"no CA", func(c *Config) { c.TLSCAFile = "" }, ErrTLS,
			"signed by an authority this client does not trust (no --kafka-tls-ca given, so only the system's CAs are trusted): pass the CA that signed it with --kafka-tls-ca FILE"},
		{"another CA", func(c *Config) { c.TLSCAFile = other.caFile }, ErrTLS, "it is not signed by a CA in " + other.caFile},
		{"name not in the certificate", func(c *Config) { c.Brokers = []string{strings.Replace(secure[0], "127.0.0.1", "localhost", 1)} }, ErrTLS,
			"is not valid for that address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			c.edit(&cfg)
			began := time.Now()
			err := cfg.Check(context.Background())
			require.Less(t, time.Since(began), 5*time.Second, "a bad setting is not retried")
			if c.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, c.want)
			require.Contains(t, err.Error(), c.saying)
			require.NotContains(t, err.Error(), testPassword, "the password never shows")
			require.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

func TestCheckUnreachable(t *testing.T) {
	t.Parallel()
	t.Run("refused", func(t *testing.T) {
		addr := closedPort(t)
		began := time.Now()
		err := Config{Brokers: []string{addr}}.Check(context.Background())
		require.ErrorIs(t, err, ErrUnreachable)
		require.Contains(t, err.Error(), "cannot connect to Kafka at "+addr)
		require.Less(t, time.Since(began), 5*time.Second)
	})
	t.Run("silent", func(t *testing.T) {
		// Accepts connections and never answers: a hung broker or a
		// firewall that swallows packets.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
			}
		}()
		began := time.Now()
		err = Config{Brokers: []string{ln.Addr().String()}, CheckTimeout: time.Second}.Check(context.Background())
		require.ErrorIs(t, err, ErrUnreachable)
		require.Contains(t, err.Error(), "did not answer within 1s")
		require.NotContains(t, err.Error(), "\n")
		require.Less(t, time.Since(began), 5*time.Second)
	})
}

// TestWaitRetriesOnlyOutages: a stage started before its broker waits and
// proceeds once the broker is up; an untrusted certificate ends Wait at once.
func TestWaitRetriesOnlyOutages(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "test-ca")
	addr := closedPort(t)
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	portNum, err := strconv.Atoi(port)
	require.NoError(t, err)
	cfg := Config{Brokers: []string{addr}, TLS: true, TLSCAFile: ca.caFile, SASLMechanism: "SCRAM-SHA-512", SASLUser: "outbox", SASLPassword: testPassword}

	var logs syncWriter
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { done <- cfg.Wait(ctx, slog.New(slog.NewTextHandler(&logs, nil))) }()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "kafka: not reachable at start; retrying") }, 10*time.Second, 20*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Wait returned while the broker was down: %v", err)
	default:
	}
	secureFake(t, ca, kfake.Ports(portNum))
	select {
	case err := <-done:
		require.NoError(t, err, "Wait once the broker is up")
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return after the broker came up")
	}
	require.NotContains(t, logs.String(), testPassword)

	bad := cfg
	bad.TLSCAFile = newTestCA(t, "other-ca").caFile
	began := time.Now()
	require.ErrorIs(t, bad.Wait(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))), ErrTLS)
	require.Less(t, time.Since(began), 5*time.Second, "an untrusted certificate is not waited out")

	stopped, stop := context.WithCancel(context.Background())
	stop()
	down := Config{Brokers: []string{closedPort(t)}}
	require.ErrorIs(t, down.Wait(stopped, slog.New(slog.NewTextHandler(io.Discard, nil))), context.Canceled)
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// syncWriter collects log output written from Wait's goroutine.
type syncWriter struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
