// Package apachekafka runs a real Apache Kafka cluster (KRaft, combined
// broker+controller nodes on 127.0.0.1) from Maven Central jars through
// scripts/kafka.sh: the ground truth under every exactly-once test, and the
// broker of `outbox demo --kafka apache`. It needs a checkout (the script and
// its pom.xml), Java 17+ and, until the jars are cached, Maven.
package apachekafka

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// EnvTransactionVersion sets the transaction.version (1, or 2 for KIP-890, the
// default) of clusters started without Config.TransactionVersion.
const EnvTransactionVersion = "OUTBOX_TEST_KAFKA_TRANSACTION_VERSION"

// EnvScript points at scripts/kafka.sh when the working directory is not
// inside a checkout.
const EnvScript = "OUTBOX_KAFKA_SCRIPT"

// Script returns the path of scripts/kafka.sh: OUTBOX_KAFKA_SCRIPT, else found
// by walking up from the working directory to the module root.
func Script() (string, error) {
	if p := os.Getenv(EnvScript); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "kafka.sh")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("apachekafka: scripts/kafka.sh not found above the working directory: run from a checkout of the outbox repository, or set " + EnvScript)
		}
		dir = up
	}
}

// Config says what Apache Kafka cluster to start.
type Config struct {
	// Brokers is the number of combined broker+controller nodes. Defaults to 1.
	Brokers int
	// TransactionVersion is 1 or 2. Defaults to OUTBOX_TEST_KAFKA_TRANSACTION_VERSION, else 2.
	TransactionVersion int
	// TLSSASL adds a SASL_SSL (SCRAM-SHA-512) listener with a certificate made
	// for the cluster; Brokers then lists that listener. Defaults to off.
	TLSSASL bool
	// Dir holds the cluster's data and logs. Defaults to a new temp folder.
	Dir string
}

// Cluster is a running Apache Kafka cluster on loopback, from scripts/kafka.sh.
type Cluster struct {
	// Dir is the cluster's folder (node-N/server.log, client.env, tls/).
	Dir string
	// Brokers is the bootstrap list: the SASL_SSL listener with TLSSASL, else plaintext.
	Brokers []string
	// Plaintext is the plaintext listener's bootstrap list.
	Plaintext []string
	// Nodes is the number of nodes.
	Nodes int
	// TransactionVersion is the cluster's transaction.version.
	TransactionVersion int
	// Env is the OUTBOX_KAFKA_* settings a client needs (client.env).
	Env    map[string]string
	script string
}

// Start starts an Apache Kafka cluster. It fails with the script's
// message (what to install) when Java or Maven is missing; it never skips.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	script, err := Script()
	if err != nil {
		return nil, err
	}
	if cfg.Brokers == 0 {
		cfg.Brokers = 1
	}
	if cfg.TransactionVersion == 0 {
		cfg.TransactionVersion = 2
		if v := os.Getenv(EnvTransactionVersion); v != "" {
			if cfg.TransactionVersion, err = strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("apachekafka: %s=%q: %w", EnvTransactionVersion, v, err)
			}
		}
	}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "outbox-kafka-*"); err != nil {
			return nil, err
		}
	}
	args := []string{script, "start", cfg.Dir, "--brokers", strconv.Itoa(cfg.Brokers),
		"--transaction-version", strconv.Itoa(cfg.TransactionVersion)}
	if cfg.TLSSASL {
		args = append(args, "--tls-sasl")
	}
	c := &Cluster{Dir: cfg.Dir, Nodes: cfg.Brokers, TransactionVersion: cfg.TransactionVersion, script: script}
	out, err := c.run(ctx, args...)
	if err != nil {
		// A start that failed or was cancelled half way may have left some
		// nodes running: stop whatever the folder holds.
		_ = c.Stop()
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	c.Brokers = strings.Split(lines[len(lines)-1], ",")
	plain, err := os.ReadFile(filepath.Join(cfg.Dir, "bootstrap.plaintext"))
	if err != nil {
		return nil, fmt.Errorf("apachekafka: %w", err)
	}
	c.Plaintext = strings.Split(strings.TrimSpace(string(plain)), ",")
	env, err := os.ReadFile(filepath.Join(cfg.Dir, "client.env"))
	if err != nil {
		return nil, fmt.Errorf("apachekafka: %w", err)
	}
	c.Env = map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(env)), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			c.Env[k] = v
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A killed test binary leaves no broker behind.
	cmd.Env = append(os.Environ(), "OUTBOX_KAFKA_WATCH_PID="+strconv.Itoa(os.Getpid()))
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("apachekafka: scripts/kafka.sh %s: %w: %s", strings.Join(args[1:], " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Opts are the client options for the plaintext listener.
func (c *Cluster) Opts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(c.Plaintext...)} }

// SecureOpts are the client options for the SASL_SSL listener (Config.TLSSASL).
func (c *Cluster) SecureOpts() ([]kgo.Opt, error) {
	pem, err := os.ReadFile(c.Env["OUTBOX_KAFKA_TLS_CA"])
	if err != nil {
		return nil, fmt.Errorf("apachekafka: CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		kgo.SASL(scram.Auth{User: c.Env["OUTBOX_KAFKA_SASL_USER"], Pass: c.Env["OUTBOX_KAFKA_SASL_PASSWORD"]}.AsSha512Mechanism()),
	}, nil
}

// Kill SIGKILLs node i (1-based) and waits until it is gone.
func (c *Cluster) Kill(i int) error { return c.node(i, "kill") }

// StopNode stops node i with SIGTERM (a clean shutdown) and waits for it.
func (c *Cluster) StopNode(i int) error { return c.node(i, "stop") }

// StartNode starts node i again and waits until it serves.
func (c *Cluster) StartNode(i int) error { return c.node(i, "start") }

func (c *Cluster) node(i int, action string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err := c.run(ctx, c.script, "node", c.Dir, strconv.Itoa(i), action)
	return err
}

// Stop stops every node of the cluster.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.run(ctx, c.script, "stop", c.Dir)
	return err
}

// WaitReady waits until every node is in the cluster metadata, so a first
// request does not race start-up.
func (c *Cluster) WaitReady(ctx context.Context) error {
	cl, err := kgo.NewClient(c.Opts()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var last error
	for {
		m, err := adm.BrokerMetadata(ctx)
		if err == nil && len(m.Brokers) == c.Nodes {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("%d of %d brokers registered", len(m.Brokers), c.Nodes)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apachekafka: Apache Kafka in %s not ready: %v", c.Dir, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
