package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/outboxrelay/outbox/internal/pgconnect"
)

// The command line is cobra's: flags may come before or after an action,
// every command has its own -h, unknown flags are a short error, and
// `outbox completion bash|zsh` comes with it. What cobra does not do, this
// file does once for every command: bind each flag to an OUTBOX_* variable,
// keep secrets out of help and of --check, and render docs/cli.md.

// sharedFlags mean the same in every command that has them, so one variable
// serves them all (one ConfigMap for every stage). Every other flag reads
// OUTBOX_<COMMAND>_<FLAG>, so a relay setting never leaks into the sink that
// shares its environment.
var sharedFlags = map[string]bool{
	"database-url": true, "schema": true, "publication": true, "slot": true,
	"brokers": true, "kafka-tls": true, "kafka-tls-ca": true, "kafka-tls-cert": true, "kafka-tls-key": true,
	"kafka-sasl-mechanism": true, "kafka-sasl-user": true, "kafka-sasl-password": true,
	"metrics-addr": true, "log-level": true, "log-format": true,
}

// ownWorld commands start their own Postgres and Kafka unless told
// otherwise: a demo or bench run must never land on the database a shell
// exports for the stages, so for them even the shared flags read
// OUTBOX_<COMMAND>_<FLAG> (OUTBOX_DEMO_DATABASE_URL), all but the log flags.
var ownWorld = map[string]bool{"demo": true, "bench": true}

// envAliases are variables flags read before the names were derived from the
// flags; they still work, after the derived name. Keyed by "COMMAND FLAG".
var envAliases = map[string][]string{
	"relay topic-template":        {"OUTBOX_TOPIC_TEMPLATE"},
	"relay record-topic-template": {"OUTBOX_RECORD_TOPIC_TEMPLATE"},
	"transform transform":         {"OUTBOX_TRANSFORM"},
	"transform payment-topic":     {"OUTBOX_PAYMENT_TOPIC"},
	"transform shipping-topic":    {"OUTBOX_SHIPPING_TOPIC"},
	"sink dead-letter-topic":      {"OUTBOX_SINK_DLT"},
	"lag group":                   {"OUTBOX_LAG_GROUPS"},
}

// noEnv are flags no variable sets: asking for help or a dry check must be
// explicit.
var noEnv = map[string]bool{"help": true, "check": true}

// secretAnnotation marks a flag whose value never appears in help, logs,
// errors or --check.
const secretAnnotation = "outbox_secret"

// markSecret marks flag name of fs as a secret.
func markSecret(fs *pflag.FlagSet, name string) {
	if err := fs.SetAnnotation(name, secretAnnotation, []string{"true"}); err != nil {
		panic(err) // a programming error: the flag is not registered
	}
}

func isSecret(f *pflag.Flag) bool {
	return len(f.Annotations[secretAnnotation]) > 0 || f.Name == "database-url"
}

// topCommand is the first word after `outbox` of c's path: the stage or tool
// whose variables c reads (`sink run` and `sink` share OUTBOX_SINK_*).
func topCommand(c *cobra.Command) string {
	parts := strings.Fields(c.CommandPath())
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// envNames are the variables flag of c reads, the derived name first.
func envNames(c *cobra.Command, flag string) []string {
	if noEnv[flag] {
		return nil
	}
	name := strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
	top := topCommand(c)
	primary := "OUTBOX_" + name
	shared := sharedFlags[flag] && (!ownWorld[top] || strings.HasPrefix(flag, "log-"))
	if !shared && top != "" {
		primary = "OUTBOX_" + strings.ToUpper(strings.ReplaceAll(top, "-", "_")) + "_" + name
	}
	return append([]string{primary}, envAliases[top+" "+flag]...)
}

// flagSources records where each flag's value came from, for --check.
type flagSources map[string]string

// bindEnv sets every flag of c that the command line did not set from its
// variable, through the flag's own parser, so OUTBOX_KAFKA_TLS=1 and
// OUTBOX_RELAY_LINGER=5ms mean what --kafka-tls=1 and --linger 5ms mean. A
// flag given explicitly always wins. An empty variable counts as unset.
func bindEnv(c *cobra.Command) (flagSources, error) {
	src := flagSources{}
	var errs []error
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			src[f.Name] = "flag"
			return
		}
		for _, name := range envNames(c, f.Name) {
			v, ok := os.LookupEnv(name)
			if !ok || v == "" {
				continue
			}
			if err := f.Value.Set(v); err != nil {
				shown := v
				if isSecret(f) {
					shown = "(redacted)"
				}
				errs = append(errs, fmt.Errorf("%w: %s=%s (for --%s): %v", errUsage, name, shown, f.Name, scrub(err, v, isSecret(f))))
			}
			src[f.Name] = "env " + name
			return
		}
		src[f.Name] = "default"
	})
	return src, errors.Join(errs...)
}

// scrub removes a secret value from an error message built by a flag parser.
func scrub(err error, value string, secret bool) string {
	if !secret || value == "" {
		return err.Error()
	}
	return strings.ReplaceAll(err.Error(), value, "(redacted)")
}

var envInUsage = regexp.MustCompile(`\s*\(env [^)]*\)`)

// annotateUsage appends each flag's variables to its help text, for every
// command under root, so help and docs/cli.md cannot disagree with bindEnv.
func annotateUsage(root *cobra.Command) {
	walk(root, func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Annotations["outbox_env_done"] != nil {
				return
			}
			names := envNames(c, f.Name)
			if len(names) == 0 {
				return
			}
			plain := envInUsage.ReplaceAllString(f.Usage, "")
			if isSecret(f) {
				plain += " (secret: never printed)"
			}
			f.Usage = plain + " [env " + strings.Join(names, ", ") + "]"
			if f.Annotations == nil {
				f.Annotations = map[string][]string{}
			}
			f.Annotations["outbox_env_done"] = []string{"true"}
			f.Annotations[plainUsageAnnotation] = []string{plain}
		})
	})
}

// plainUsageAnnotation keeps a flag's help without its variables, for docs/cli.md.
const plainUsageAnnotation = "outbox_plain_usage"

// plainUsage is f's help without the variables annotateUsage appended.
func plainUsage(f *pflag.Flag) string {
	if p := f.Annotations[plainUsageAnnotation]; len(p) > 0 {
		return p[0]
	}
	return f.Usage
}

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, s := range c.Commands() {
		walk(s, fn)
	}
}

// redactedValue is how --check shows f's value.
func redactedValue(f *pflag.Flag) string {
	v := f.Value.String()
	if !isSecret(f) || v == "" || v == "[]" || v == "map[]" {
		return v
	}
	if f.Name == "database-url" {
		return pgconnect.Redact(v)
	}
	return "(set, redacted)"
}

// printEffective writes what --check prints: every flag of c, its value with
// secrets redacted, and where the value came from.
func printEffective(w io.Writer, c *cobra.Command, src flagSources) error {
	var rows []*pflag.Flag
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && f.Name != "check" {
			rows = append(rows, f)
		}
	})
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tVALUE\tFROM")
	for _, f := range rows {
		fmt.Fprintf(tw, "--%s\t%s\t%s\n", f.Name, redactedValue(f), src[f.Name])
	}
	return tw.Flush()
}
