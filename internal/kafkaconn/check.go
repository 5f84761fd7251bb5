package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outboxrelay/outbox/internal/startwait"
)

// DefaultCheckTimeout bounds Check when Config.CheckTimeout is zero: long
// enough for a TLS handshake and a SCRAM exchange on a loaded host, short
// enough that a bad setting fails a start within seconds.
const DefaultCheckTimeout = 10 * time.Second

// Errors Check returns, each wrapped with a one-line message saying what is
// wrong and which flag or environment variable to fix. The password never
// appears in them.
var (
	// ErrAuth is returned when a broker rejects the SASL credentials or the
	// mechanism. Retrying cannot help.
	ErrAuth = errors.New("kafka: authentication failed")
	// ErrTLS is returned when the TLS settings do not fit the broker: its
	// certificate is not trusted, it does not speak TLS on that port, or it
	// refused the handshake. Retrying cannot help.
	ErrTLS = errors.New("kafka: TLS failed")
	// ErrListener is returned when the broker at that address closed the
	// connection at once or answered with something that is not Kafka: the
	// port is another listener's (it wants TLS or SASL that is not set, or
	// none that is) or not Kafka's at all. Retrying cannot help.
	ErrListener = errors.New("kafka: settings do not fit the listener")
	// ErrUnreachable is returned when no broker answered within the timeout
	// (refused, unresolvable or silent). It is the one Check error an outage
	// also produces; Wait retries it.
	ErrUnreachable = errors.New("kafka: no broker reachable")
)

// Check connects to the cluster once and asks it for its metadata (no
// topics), which makes the client dial, handshake TLS, authenticate and
// negotiate API versions, all within c.CheckTimeout. It returns nil when a
// broker answered, else an error wrapping ErrAuth, ErrTLS, ErrListener or
// ErrUnreachable (or, for anything it cannot classify, the client's error
// with the operation), or ctx's error when ctx ends first. Commands call it
// before starting a stage, because the stages' clients retry every
// connection failure forever, a wrong password included.
func (c Config) Check(parent context.Context) error {
	opts, err := c.Opts()
	if err != nil {
		return err
	}
	timeout := c.CheckTimeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()

	// The request may end with only "context deadline exceeded" after the
	// client retried a failing dial; the hook keeps the dial's own error,
	// which says why.
	var last lastConnErr
	// The client's own dial and read bounds (10s each) would outlast a
	// shorter timeout: a silent broker would hold the connection, and
	// Close, past it.
	opts = append(opts, kgo.WithHooks(&last), kgo.DialTimeout(timeout), kgo.RequestTimeoutOverhead(timeout))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka: client: %w", err)
	}
	defer cl.Close()

	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{} // none: nil would mean every topic
	_, err = req.RequestWith(ctx, cl)
	if err == nil {
		return nil
	}
	if parent.Err() != nil {
		return fmt.Errorf("kafka: check: %w", parent.Err())
	}
	if ctx.Err() != nil {
		if cause := last.get(); cause != nil {
			err = cause
		}
	}
	return c.explain(err, timeout)
}

// describe names the client's TLS and SASL settings, never the password.
func (c Config) describe() string {
	tlsOn, sasl := "TLS off", "no SASL"
	if c.TLS || c.TLSCAFile != "" || c.TLSCertFile != "" {
		tlsOn = "TLS on"
	}
	if c.SASLMechanism != "" {
		sasl = "SASL " + strings.ToUpper(c.SASLMechanism)
	}
	return tlsOn + ", " + sasl
}

// explain maps a failed first request to one of the Check errors.
func (c Config) explain(err error, timeout time.Duration) error {
	at := strings.Join(c.Brokers, ",")
	user := c.SASLUser
	mech := strings.ToUpper(c.SASLMechanism)

	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		alert     tls.AlertError
		firstEOF  *kgo.ErrFirstReadEOF
		dnsErr    *net.DNSError
		opErr     *net.OpError
	)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Errorf("%w: Kafka at %s rejected the %s credentials of user %q: check --kafka-sasl-user and --kafka-sasl-password (env OUTBOX_KAFKA_SASL_USER, OUTBOX_KAFKA_SASL_PASSWORD)", ErrAuth, at, mech, user)
	case errors.Is(err, kerr.UnsupportedSaslMechanism), errors.Is(err, kerr.IllegalSaslState):
		return fmt.Errorf("%w: Kafka at %s does not accept SASL mechanism %s on this listener (%v): set --kafka-sasl-mechanism (env OUTBOX_KAFKA_SASL_MECHANISM) to one it enables, or use the listener meant for it", ErrAuth, at, mech, err)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%w: the certificate of Kafka at %s is signed by an authority this client does not trust (%v): pass the CA that signed it with --kafka-tls-ca FILE (env OUTBOX_KAFKA_TLS_CA)", ErrTLS, at, caHint(c))
	case errors.As(err, &hostErr):
		return fmt.Errorf("%w: the certificate of Kafka at %s is not valid for that address (%v): connect by a name the certificate lists, or reissue it", ErrTLS, at, hostErr)
	case errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("%w: the certificate of Kafka at %s is not accepted (%v): check it and --kafka-tls-ca (env OUTBOX_KAFKA_TLS_CA)", ErrTLS, at, err)
	case errors.As(err, &record):
		return fmt.Errorf("%w: Kafka at %s does not speak TLS on that port: drop --kafka-tls (env OUTBOX_KAFKA_TLS) or use the broker's TLS listener", ErrTLS, at)
	case errors.As(err, &alert):
		return fmt.Errorf("%w: Kafka at %s refused the TLS handshake (%v): does it require a client certificate (--kafka-tls-cert, --kafka-tls-key)?", ErrTLS, at, alert)
	case errors.As(err, &firstEOF):
		// franz-go's guess: the broker hung up on the first request, as
		// Kafka does when TLS or SASL is missing, or TLS is used on a
		// plaintext port.
		return fmt.Errorf("%w: Kafka at %s closed the connection before answering (this client: %s): the listener probably wants SASL (--kafka-sasl-mechanism, env OUTBOX_KAFKA_SASL_MECHANISM) or TLS (--kafka-tls, env OUTBOX_KAFKA_TLS) set differently", ErrListener, at, c.describe())
	case strings.Contains(err.Error(), "plaintext connection speaking to a tls endpoint"):
		// franz-go reports this only as text: a TLS alert read as a
		// response size.
		return fmt.Errorf("%w: Kafka at %s expects TLS on that port: pass --kafka-tls (env OUTBOX_KAFKA_TLS=true), with --kafka-tls-ca if its CA is not in the system pool", ErrTLS, at)
	case strings.Contains(err.Error(), "invalid large response size"):
		return fmt.Errorf("%w: %s answered with something that is not Kafka (%v): check --brokers (env OUTBOX_BROKERS)", ErrListener, at, err)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("%w: cannot resolve %q (of --brokers %s): %v", ErrUnreachable, dnsErr.Name, at, dnsErr.Err)
	case errors.As(err, &opErr) && opErr.Timeout():
		return fmt.Errorf("%w: Kafka at %s did not answer within %s: check --brokers (env OUTBOX_BROKERS) and that the brokers run", ErrUnreachable, at, timeout)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("%w: cannot connect to Kafka at %s: %v: check --brokers (env OUTBOX_BROKERS) and that the brokers run", ErrUnreachable, at, opErr.Err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: Kafka at %s did not answer within %s: check --brokers (env OUTBOX_BROKERS) and that the brokers run", ErrUnreachable, at, timeout)
	}
	return fmt.Errorf("kafka: first request to %s: %w", at, err)
}

// caHint says which trust store rejected the certificate.
func caHint(c Config) string {
	if c.TLSCAFile == "" {
		return "no --kafka-tls-ca given, so only the system's CAs are trusted"
	}
	return "it is not signed by a CA in " + c.TLSCAFile
}

// lastConnErr is a kgo hook that keeps the latest failed connection's error.
type lastConnErr struct {
	mu  sync.Mutex
	err error
}

func (l *lastConnErr) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

func (l *lastConnErr) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Wait runs Check until a broker answers, retrying ErrUnreachable with a
// growing pause (about 1s, doubling to 30s) and logging each failure: a
// long-running stage that starts during an outage waits for Kafka instead of
// exiting, while a setting that can never work (ErrAuth, ErrTLS, anything
// else) ends it at once. When ctx ends first it returns an error wrapping
// ctx.Err().
func (c Config) Wait(ctx context.Context, logger *slog.Logger) error {
	return startwait.Until(ctx, logger, "kafka", "wait for a broker", ErrUnreachable, func(ctx context.Context) error { return c.Check(ctx) })
}
