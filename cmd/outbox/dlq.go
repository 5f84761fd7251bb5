package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/internal/ops/deadletter"
)

// dlqCmd is `outbox dlq list|show|replay`.
func dlqCmd(e *env) *cobra.Command {
	return groupCmd(e, "dlq", "read and replay dead-letter topics: list | show | replay",
		dlqListCmd(e), dlqShowCmd(e), dlqReplayCmd(e))
}

// dlqFlags are the flags list, show and replay share.
type dlqFlags struct {
	kc                       kafkaconn.Config
	topic                    string
	origin, errText, key, at string
	since, until             string
}

func registerDLQFlags(fs *pflag.FlagSet, withFilters bool) *dlqFlags {
	f := &dlqFlags{}
	f.kc.Register(fs)
	fs.StringVar(&f.topic, "topic", "", "dead-letter topic")
	if withFilters {
		fs.StringVar(&f.origin, "origin-topic", "", "only dead letters from this topic")
		fs.StringVar(&f.errText, "error", "", "only dead letters whose error class or message contains this text (case-insensitive)")
		fs.StringVar(&f.key, "key", "", "only dead letters with this record key")
		fs.StringVar(&f.since, "since", "", "only dead letters from this time on: RFC 3339, or a duration ago such as 2h")
		fs.StringVar(&f.until, "until", "", "only dead letters before this time: RFC 3339, or a duration ago")
		fs.StringVar(&f.at, "at", "", "only these records, as partition:offset, comma separated")
	}
	return f
}

// opts validates the flags and checks that the cluster answers with them, so
// a wrong password or an untrusted certificate fails at once, not after the
// read or replay's own retries.
func (f *dlqFlags) opts(ctx context.Context) ([]kgo.Opt, error) {
	if f.topic == "" {
		return nil, fmt.Errorf("%w: --topic (or OUTBOX_DLQ_TOPIC) is required", errUsage)
	}
	opts, err := f.kc.Opts()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := f.kc.Check(ctx); err != nil {
		return nil, err
	}
	return opts, nil
}

// explain turns a missing dead-letter topic into one line saying what that
// usually means (a wrong --topic, or nothing ever dead-lettered there)
// instead of the broker's UNKNOWN_TOPIC_OR_PARTITION, which reads like an
// outage. Other errors pass unchanged.
func (f *dlqFlags) explain(err error) error {
	if errors.Is(err, deadletter.ErrTopicNotFound) {
		return exitError{code: 1, msg: fmt.Sprintf("topic %s does not exist (no dead letters yet, or a wrong --topic; `outbox topics apply` creates it)", f.topic)}
	}
	return err
}

func (f *dlqFlags) filter() (deadletter.Filter, error) {
	flt := deadletter.Filter{OriginTopic: f.origin, ErrorContains: f.errText, Key: f.key}
	var err error
	if flt.Since, err = parseWhen(f.since); err != nil {
		return flt, err
	}
	if flt.Until, err = parseWhen(f.until); err != nil {
		return flt, err
	}
	for _, s := range splitList(f.at) {
		p, err := deadletter.ParsePosition(s)
		if err != nil {
			return flt, fmt.Errorf("%w: --at: %v", errUsage, err)
		}
		flt.Positions = append(flt.Positions, p)
	}
	return flt, nil
}

// parseWhen is deadletter.ParseWhen (RFC 3339 or a duration before now; ""
// is the zero time) with a bad input a usage error.
func parseWhen(s string) (time.Time, error) {
	t, err := deadletter.ParseWhen(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	return t, nil
}

func dlqListCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "list", Short: "list dead letters, with filters", Args: noArgs}
	fs := c.Flags()
	f := registerDLQFlags(fs, true)
	limit := fs.Int("limit", 0, "stop after this many dead letters (0: all)")
	asJSON := fs.Bool("json", false, "print one JSON object per dead letter")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		opts, err := f.opts(ctx)
		if err != nil {
			return err
		}
		flt, err := f.filter()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		if !*asJSON {
			fmt.Fprintln(tw, "POSITION\tDEAD_LETTERED\tORIGIN\tKEY\tEVENT_ID\tREPLAYS\tSTAGE\tERROR")
		}
		n := 0
		errStop := errors.New("limit reached")
		err = deadletter.List(ctx, opts, f.topic, flt, func(l deadletter.Letter) error {
			if *limit > 0 && n >= *limit {
				return errStop
			}
			n++
			if *asJSON {
				return json.NewEncoder(e.stdout).Encode(letterJSON(l, resolveLetter(ctx, nil, l)))
			}
			d := l.DeadLetter
			fmt.Fprintf(tw, "%s\t%s\t%s/%d@%d\t%s\t%s\t%d\t%s\t%s\n", l.Position(), l.At().UTC().Format(time.RFC3339),
				d.OriginTopic, d.OriginPartition, d.OriginOffset, l.Record.Key, l.EventID, l.ReplayCount, d.Stage,
				truncate(oneLine(d.ErrorClass+": "+d.ErrorMessage), 80))
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return f.explain(err)
		}
		if !*asJSON {
			if err := tw.Flush(); err != nil {
				return fmt.Errorf("dlq: write: %w", err)
			}
			fmt.Fprintf(e.stderr, "%d dead letter(s)\n", n)
		}
		return nil
	}
	return c
}

func dlqShowCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "show PARTITION:OFFSET", Short: "show one dead letter with every header decoded", Args: cobra.ArbitraryArgs}
	fs := c.Flags()
	f := registerDLQFlags(fs, false)
	asJSON := fs.Bool("json", false, "print JSON")
	cc := registerClaimCheckFlags(fs)
	dbURL := fs.String("claim-check-database-url", "", "Postgres URL of the claim-check store, with --claim-check")
	markSecret(fs, "claim-check-database-url")
	schema := schemaFlag(fs)
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if len(args) != 1 {
			return fmt.Errorf("%w: outbox dlq show PARTITION:OFFSET --topic DLQ", errUsage)
		}
		pos, err := deadletter.ParsePosition(args[0])
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		opts, err := f.opts(ctx)
		if err != nil {
			return err
		}
		l, err := deadletter.Get(ctx, opts, f.topic, pos)
		if err != nil {
			return f.explain(err)
		}
		resolver, closeResolver, err := cc.resolver(ctx, *dbURL, *schema)
		if err != nil {
			return err
		}
		defer closeResolver()
		claim := resolveLetter(ctx, resolver, l)
		if claim.resolved {
			l.Record.Value = claim.payload
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(letterJSON(l, claim)); err != nil {
				return fmt.Errorf("dlq: write: %w", err)
			}
			return nil
		}
		return writeLetter(e.stdout, f.topic, l, claim)
	}
	return c
}

// writeLetter prints one dead letter with every header decoded.
func writeLetter(w io.Writer, topic string, l deadletter.Letter, claim letterClaim) error {
	d, r := l.DeadLetter, l.Record
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "record\t%s/%s\n", topic, l.Position())
	fmt.Fprintf(tw, "timestamp\t%s\n", r.Timestamp.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(tw, "key\t%s\n", printable(r.Key))
	fmt.Fprintf(tw, "event id\t%s\n", l.EventID)
	fmt.Fprintf(tw, "origin\t%s partition %d offset %d (timestamp %s)\n", d.OriginTopic, d.OriginPartition, d.OriginOffset, fmtTime(d.OriginTimestamp))
	stage := d.Stage
	if d.StageName != "" {
		stage += " (" + d.StageName + ")"
	}
	if d.Group != "" {
		stage += ", group " + d.Group
	}
	fmt.Fprintf(tw, "stage\t%s\n", stage)
	fmt.Fprintf(tw, "error\t%s: %s\n", d.ErrorClass, d.ErrorMessage)
	fmt.Fprintf(tw, "attempts\t%d\n", d.Attempt)
	fmt.Fprintf(tw, "dead-lettered at\t%s\n", fmtTime(d.At))
	fmt.Fprintf(tw, "replays\t%d\n", l.ReplayCount)
	if len(d.History) > 0 {
		fmt.Fprintln(tw, "history\t")
		for _, a := range d.History {
			fmt.Fprintf(tw, "  #%d\t%s status=%d latency=%dms %s\n", a.N, fmtTime(a.At), a.Status, a.LatencyMS, a.Error)
		}
	}
	fmt.Fprintln(tw, "headers\t")
	for _, h := range r.Headers {
		fmt.Fprintf(tw, "  %s\t%s\n", h.Key, printable(h.Value))
	}
	if claim.ref.URI != "" {
		fmt.Fprintf(tw, "claim-check\t%s\n", claim.describe())
	}
	fmt.Fprintf(tw, "value\t%s\n", printable(r.Value))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("dlq: write: %w", err)
	}
	return nil
}

func letterJSON(l deadletter.Letter, claim letterClaim) any {
	hs := map[string]string{}
	for _, h := range l.Record.Headers {
		hs[h.Key] = printable(h.Value)
	}
	var value any = printable(l.Record.Value)
	if json.Valid(l.Record.Value) {
		value = json.RawMessage(l.Record.Value)
	}
	return struct {
		Partition   int32                  `json:"partition"`
		Offset      int64                  `json:"offset"`
		Timestamp   time.Time              `json:"timestamp"`
		Key         string                 `json:"key"`
		EventID     string                 `json:"event_id"`
		ReplayCount int                    `json:"replay_count"`
		DeadLetter  deadletter.HeadersView `json:"dead_letter"`
		Headers     map[string]string      `json:"headers"`
		ClaimCheck  *claimJSON             `json:"claim_check,omitempty"`
		Value       any                    `json:"value"`
	}{l.Record.Partition, l.Record.Offset, l.Record.Timestamp.UTC(), printable(l.Record.Key), l.EventID, l.ReplayCount, l.View(), hs, claim.json(), value}
}

func dlqReplayCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "replay", Short: "replay dead letters to their origin (or a retry tier) exactly once, with a dry run", Args: noArgs}
	fs := c.Flags()
	f := registerDLQFlags(fs, true)
	to := fs.String("to", "", "replay into this retry tier topic instead of each record's origin topic")
	maxReplays := fs.Int("max-replays", 3, "a record replayed this many times goes to the quarantine topic instead")
	quarantine := fs.String("quarantine-topic", "", "quarantine topic (default DLQ.quarantine)")
	ledger := fs.String("ledger-topic", "", "compacted replay ledger topic (default DLQ.replayed)")
	batch := fs.Int("batch-size", 100, "records per Kafka transaction")
	limit := fs.Int("limit", 0, "replay at most this many records (0: all selected)")
	dryRun := fs.Bool("dry-run", false, "print what would be replayed, change nothing")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		opts, err := f.opts(ctx)
		if err != nil {
			return err
		}
		flt, err := f.filter()
		if err != nil {
			return err
		}
		cfg := deadletter.ReplayConfig{Topic: f.topic, Filter: flt, To: *to, MaxReplays: *maxReplays,
			QuarantineTopic: *quarantine, LedgerTopic: *ledger, BatchSize: *batch, Limit: *limit, DryRun: *dryRun, Logger: e.logger}
		bar := newProgressBar(e.stderr)
		if !*dryRun {
			cfg.Progress = bar.update
		}
		res, err := deadletter.Replay(ctx, opts, cfg)
		bar.finish()
		if errors.Is(err, deadletter.ErrTopicNotFound) {
			// Nothing was read: a summary of zeros would read as "all done".
			return f.explain(err)
		}
		if *dryRun || err == nil {
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "POSITION\tKEY\tEVENT_ID\tREPLAYS\tACTION\tTO")
			for _, o := range res.Outcomes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", o.Letter.Position(), printable(o.Letter.Record.Key), o.Letter.EventID, o.Letter.ReplayCount, o.Action, o.To)
			}
			if werr := tw.Flush(); werr != nil {
				return fmt.Errorf("dlq: write: %w", werr)
			}
		}
		verb := "replayed"
		if *dryRun {
			verb = "would replay"
		}
		fmt.Fprintf(e.stdout, "%s %d, quarantined %d, already replayed %d, no destination %d\n", verb, res.Replayed, res.Quarantined, res.AlreadyReplayed, res.NoDestination)
		return err
	}
	return c
}

// progressBar draws replay progress on stderr when stderr is a terminal.
type progressBar struct {
	w    io.Writer
	tty  bool
	last time.Time
	drew bool
}

func newProgressBar(w io.Writer) *progressBar {
	f, ok := w.(*os.File)
	tty := false
	if ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, tty: tty}
}

func (p *progressBar) update(done, total int) {
	if !p.tty || total < 20 || (done < total && time.Since(p.last) < 100*time.Millisecond) {
		return
	}
	p.last, p.drew = time.Now(), true
	const width = 40
	filled := width * done / total
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, total)
}

func (p *progressBar) finish() {
	if p.drew {
		fmt.Fprintln(p.w)
	}
}

func printable(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
