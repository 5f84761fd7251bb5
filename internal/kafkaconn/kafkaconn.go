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
	"fmt"
	"github.com/spf13/pflag"
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

// Register adds the connection flags to fs. It reads no environment: the
// command line binds every flag to its variable in one place (OUTBOX_BROKERS,
// OUTBOX_KAFKA_TLS, ... OUTBOX_KAFKA_SASL_PASSWORD), and the password is
// annotated as a secret so help and --check never show it.
func (c *Config) Register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&c.Brokers, "brokers", nil, "Kafka seed brokers, `host:port` comma separated or repeated")
	fs.BoolVar(&c.TLS, "kafka-tls", false, "connect to Kafka over TLS")
	fs.StringVar(&c.TLSCAFile, "kafka-tls-ca", "", "PEM file of CAs to trust")
	fs.StringVar(&c.TLSCertFile, "kafka-tls-cert", "", "client certificate PEM for mutual TLS")
	fs.StringVar(&c.TLSKeyFile, "kafka-tls-key", "", "client key PEM for mutual TLS")
	fs.StringVar(&c.SASLMechanism, "kafka-sasl-mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	fs.StringVar(&c.SASLUser, "kafka-sasl-user", "", "SASL user")
	fs.StringVar(&c.SASLPassword, "kafka-sasl-password", "", "SASL password")
	_ = fs.SetAnnotation("kafka-sasl-password", "outbox_secret", []string{"true"})
}

// Opts validates the config and returns the franz-go options for it.
func (c Config) Opts() ([]kgo.Opt, error) {
	var brokers []string
	for _, b := range c.Brokers {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		return nil, ErrNoBrokers
	}
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
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
