package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/schema"
)

// wireFlags are the Schema Registry flags: the relay's (encode: registry,
// folder, format, register, dead letter) or a reader's (decode: registry
// only).
type wireFlags struct {
	registry, dir, format, deadLetter *string
	register                          *bool
}

// registerWireFlags registers --schema-registry and, for the relay, the
// encoding flags.
func registerWireFlags(fs *pflag.FlagSet, encode bool) *wireFlags {
	f := &wireFlags{registry: fs.String("schema-registry", "", "Confluent-compatible Schema Registry URL (Confluent, Apicurio's /apis/ccompat/v7, Karapace): "+
		map[bool]string{true: "write values in the Confluent wire format (magic byte, schema id) for the event types --schemas-dir has schemas for",
			false: "decode values in the Confluent wire format (Avro, JSON Schema) back to the JSON the writer stored"}[encode])}
	if encode {
		f.dir = fs.String("schemas-dir", "schemas", "with --schema-registry: the schemas folder (<event_type>/v<N>.avsc and v<N>.json); each type's latest version encodes")
		f.format = fs.String("value-format", "avro", "with --schema-registry: avro (Avro binary, for KafkaAvroDeserializer) or json (JSON Schema, for KafkaJsonSchemaDeserializer)")
		f.register = fs.Bool("schema-register", false, "with --schema-registry: register a version the registry lacks (default: look it up only, and register with outbox schema register in the deploy pipeline)")
		f.deadLetter = fs.String("schema-dead-letter", "", "with --schema-registry: topic for events whose payload does not match their schema, as written, with header outbox.schema-error (default: stop the relay on such an event)")
	}
	return f
}

// wire builds the Wire, or nil without --schema-registry.
func (f *wireFlags) wire() (*schema.Wire, error) {
	if *f.registry == "" {
		return nil, nil
	}
	cl, err := newRegistryClient(*f.registry)
	if err != nil {
		return nil, err
	}
	cfg := schema.WireConfig{Registry: cl}
	if f.dir != nil {
		set, err := loadFolder(*f.dir)
		if err != nil {
			return nil, fmt.Errorf("%w: --schemas-dir: %v", errUsage, err)
		}
		cfg.Set, cfg.Register = set, *f.register
		switch strings.ToLower(*f.format) {
		case "avro":
			cfg.Format = schema.FormatAvro
		case "json":
			cfg.Format = schema.FormatJSON
		default:
			return nil, fmt.Errorf("%w: --value-format %q: want avro or json", errUsage, *f.format)
		}
	}
	return schema.NewWire(cfg)
}

// encoder is w as a relay.ValueEncoder, nil (not a nil *Wire) without one.
func encoder(w *schema.Wire) relay.ValueEncoder {
	if w == nil {
		return nil
	}
	return w
}

// decoder is w as the stages' ValueDecoder, nil without one.
func decoder(w *schema.Wire) interface {
	Decode(ctx context.Context, value []byte) ([]byte, bool, error)
} {
	if w == nil {
		return nil
	}
	return w
}

// newRegistryClient is franz-go's registry client with a request timeout.
func newRegistryClient(url string) (*sr.Client, error) {
	cl, err := sr.NewClient(sr.URLs(strings.TrimRight(url, "/")), sr.HTTPClient(&http.Client{Timeout: 30 * time.Second}))
	if err != nil {
		return nil, fmt.Errorf("%w: --schema-registry %s: %v", errUsage, url, err)
	}
	return cl, nil
}

// schemaRegisterCmd is `outbox schema register`: the deploy step that puts
// the folder's versions into the registry before a relay writes them.
func schemaRegisterCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "register",
		Short: "register every schema version of the folder in a Schema Registry, oldest first; prints each id",
		Long: `Registers every version of every event type in the schemas folder, oldest
first, under the subject named for the event type (Avro: <event_type>; JSON
Schema: <event_type>-json). The registry checks each against the subject's
compatibility mode and refuses a breaking one (exit 1, with its message); a
version it already has keeps its id. Run it in the deploy pipeline after
` + "`outbox schema check`" + ` and before the relays that write with --schema-registry.`,
		Args: noArgs,
	}
	fs := c.Flags()
	var (
		dir      = fs.String("dir", "schemas", "the schemas folder: <event_type>/v<N>.avsc and v<N>.json")
		registry = fs.String("registry", "", "Confluent-compatible Schema Registry URL (required)")
		timeout  = fs.Duration("timeout", 2*time.Minute, "bound on the whole registration")
	)
	c.RunE = func(c *cobra.Command, args []string) error {
		if *registry == "" {
			return fmt.Errorf("%w: --registry is required", errUsage)
		}
		set, err := loadFolder(*dir)
		if err != nil {
			return err
		}
		cl, err := newRegistryClient(*registry)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(c.Context(), *timeout)
		defer cancel()
		regs, err := schema.Register(ctx, cl, set)
		for _, r := range regs {
			fmt.Fprintf(e.stdout, "%-32s subject %s version %d id %d\n", r.Version, r.Subject, r.SubjectVersion, r.ID)
		}
		if err != nil {
			return err
		}
		return nil
	}
	return c
}
