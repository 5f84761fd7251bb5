// Package kafkaconn turns the connection settings every subcommand shares
// (brokers, TLS, SASL) into franz-go options. It is plumbing for cmd/outbox and
// the stages' callers; the stages themselves take []kgo.Opt so users keep every
// franz-go knob.
//
// Check (and Wait, its retrying form for long-running stages) makes one
// request with these settings at start, so that a wrong password or an
// untrusted certificate ends a command with a line saying what to fix
// instead of a client that retries it forever.
package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Config is how to reach a Kafka cluster.
type Config struct {
	// Brokers are seed addresses, host:port. Empty with Embedded false is an error.
	Brokers []string
	// TLS switches TLS on. Defaults to off.
	TLS bool
	// TLSCAFile is a PEM bundle of CAs to trust. Defaults to the system pool.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a client certificate for mutual TLS.
	TLSCertFile, TLSKeyFile string
	// TLSInsecureSkipVerify skips server certificate checks (tests only).
	TLSInsecureSkipVerify bool
	// SASLMechanism is "", "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512".
	SASLMechanism string
	// SASLUser and SASLPassword are the SASL credentials.
	SASLUser, SASLPassword string
	// CheckTimeout bounds Check's one request. Defaults to DefaultCheckTimeout (10s).
	CheckTimeout time.Duration
}

// ErrNoBrokers is returned by Opts when no broker address is configured.
var ErrNoBrokers = errors.New("kafkaconn: no brokers: pass --brokers host:port (or OUTBOX_BROKERS), or --embedded-kafka to try it without a broker")

// Register adds the connection flags to fs, with defaults from the environment
// (OUTBOX_BROKERS, OUTBOX_KAFKA_TLS, OUTBOX_KAFKA_TLS_CA, OUTBOX_KAFKA_TLS_CERT,
// OUTBOX_KAFKA_TLS_KEY, OUTBOX_KAFKA_SASL_MECHANISM, OUTBOX_KAFKA_SASL_USER,
// OUTBOX_KAFKA_SASL_PASSWORD).
func (c *Config) Register(fs *flag.FlagSet) {
	fs.Func("brokers", "Kafka seed brokers, comma separated (env OUTBOX_BROKERS)", func(s string) error {
		c.Brokers = splitList(s)
		return nil
	})
	c.Brokers = splitList(os.Getenv("OUTBOX_BROKERS"))
	fs.BoolVar(&c.TLS, "kafka-tls", os.Getenv("OUTBOX_KAFKA_TLS") == "true", "connect to Kafka over TLS (env OUTBOX_KAFKA_TLS=true)")
	fs.StringVar(&c.TLSCAFile, "kafka-tls-ca", os.Getenv("OUTBOX_KAFKA_TLS_CA"), "PEM file of CAs to trust (env OUTBOX_KAFKA_TLS_CA)")
	fs.StringVar(&c.TLSCertFile, "kafka-tls-cert", os.Getenv("OUTBOX_KAFKA_TLS_CERT"), "client certificate PEM for mutual TLS (env OUTBOX_KAFKA_TLS_CERT)")
	fs.StringVar(&c.TLSKeyFile, "kafka-tls-key", os.Getenv("OUTBOX_KAFKA_TLS_KEY"), "client key PEM for mutual TLS (env OUTBOX_KAFKA_TLS_KEY)")
	fs.StringVar(&c.SASLMechanism, "kafka-sasl-mechanism", os.Getenv("OUTBOX_KAFKA_SASL_MECHANISM"), "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (env OUTBOX_KAFKA_SASL_MECHANISM)")
	fs.StringVar(&c.SASLUser, "kafka-sasl-user", os.Getenv("OUTBOX_KAFKA_SASL_USER"), "SASL user (env OUTBOX_KAFKA_SASL_USER)")
	fs.StringVar(&c.SASLPassword, "kafka-sasl-password", os.Getenv("OUTBOX_KAFKA_SASL_PASSWORD"), "SASL password (env OUTBOX_KAFKA_SASL_PASSWORD)")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Opts validates the config and returns the franz-go options for it.
func (c Config) Opts() ([]kgo.Opt, error) {
	if len(c.Brokers) == 0 {
		return nil, ErrNoBrokers
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.TLS || c.TLSCAFile != "" || c.TLSCertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.TLSInsecureSkipVerify} //nolint:gosec // opt-in for tests
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("kafkaconn: read CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafkaconn: %s holds no PEM certificate", c.TLSCAFile)
			}
			tc.RootCAs = pool
		}
		if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
			return nil, errors.New("kafkaconn: --kafka-tls-cert and --kafka-tls-key go together")
		}
		if c.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("kafkaconn: load client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch strings.ToUpper(c.SASLMechanism) {
	case "":
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("kafkaconn: unknown SASL mechanism %q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASLMechanism)
	}
	return opts, nil
}
