package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/kafkaconn"
	"github.com/outboxrelay/outbox/relay"
)

// republishCmd is `outbox republish`: it repairs a gap in Kafka from the
// events table, exactly once (relay.Republish).
func republishCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "republish",
		Short: "publish the outbox rows of a window that Kafka lacks, exactly once (repairs slot loss, lost WAL, rows from before the slot)",
		Args:  noArgs,
	}
	fs := c.Flags()
	dbURL := databaseURLFlag(fs)
	schema := schemaFlag(fs)
	var kc kafkaconn.Config
	kc.Register(fs)
	var (
		slot       = fs.String("slot", "", "the relay's slot: rows still in its stream are left to the relay (a running relay is waited for); defaults to SCHEMA_relay")
		pub        = fs.String("publication", "", "the relay's publication; defaults to SCHEMA_events")
		since      = fs.String("since", "", "rows created from this time on (required): RFC 3339, or a duration ago such as 2h")
		until      = fs.String("until", "", "rows created before this time: RFC 3339, or a duration ago; default: no bound")
		aggTypes   = fs.String("aggregate-type", "", "only rows of these aggregate types, comma separated")
		eventIDs   = fs.StringSlice("event-id", nil, "only these events (repeat the flag or separate with commas)")
		dryRun     = fs.Bool("dry-run", false, "list what would be published and publish nothing")
		txnID      = fs.String("transactional-id", "", "Kafka transactional id of the republish producer, stable so a new run fences a crashed one; defaults to outbox-republish-SLOT")
		ckptTopic  = fs.String("checkpoint-topic", "outbox.relay.checkpoints", "compacted topic that receives the republish's progress records")
		topicTmpl  = fs.String("topic-template", "outbox.{aggregate_type}", "the relay's --topic-template")
		recordTmpl = fs.String("record-topic-template", "outbox.{aggregate_type}.records", "the relay's --record-topic-template")
		create     = fs.Bool("create-topics", false, "create a missing target topic instead of failing")
		batch      = fs.Int("batch-events", 5000, "records per Kafka transaction")
		margin     = fs.Duration("kafka-margin", 5*time.Minute, "start the scan of the topics this long before --since (clock differences)")
		wait       = fs.Duration("wait", 2*time.Minute, "how long to wait for a running relay to relay everything committed before the republish began")
		wf         = registerWireFlags(fs, true)
	)
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if err := requireDatabaseURL(*dbURL); err != nil {
			return err
		}
		if *since == "" {
			return fmt.Errorf("%w: --since is required: the start of the window to repair (the relay's error and `outbox doctor` print it)", errUsage)
		}
		sinceT, err := parseWhen(*since)
		if err != nil {
			return err
		}
		untilT, err := parseWhen(*until)
		if err != nil {
			return err
		}
		var ids []uuid.UUID
		for _, s := range *eventIDs {
			id, err := uuid.Parse(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%w: --event-id %q: %v", errUsage, s, err)
			}
			ids = append(ids, id)
		}
		kopts, err := kc.Opts()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if err := checkPostgres(ctx, *dbURL); err != nil {
			return err
		}
		if err := kc.Check(ctx); err != nil {
			return err
		}
		wire, err := wf.wire()
		if err != nil {
			return err
		}
		progress := newProgress(e.stderr)
		cfg := relay.RepublishConfig{
			Encoder:               encoder(wire),
			SchemaDeadLetterTopic: *wf.deadLetter,
			DatabaseURL:           *dbURL,
			Schema:                *schema,
			Slot:                  *slot,
			Publication:           *pub,
			Since:                 sinceT,
			Until:                 untilT,
			AggregateTypes:        splitList(*aggTypes),
			EventIDs:              ids,
			DryRun:                *dryRun,
			KafkaOpts:             kopts,
			TransactionalID:       *txnID,
			CheckpointTopic:       *ckptTopic,
			TopicTemplate:         *topicTmpl,
			RecordTopicTemplate:   *recordTmpl,
			CreateTopics:          *create,
			BatchEvents:           *batch,
			KafkaMargin:           *margin,
			WaitTimeout:           *wait,
			Progress:              progress.update,
			Logger:                e.logger,
		}
		sum, err := relay.Republish(ctx, cfg)
		progress.done()
		if errors.Is(err, relay.ErrRelayBehind) || errors.Is(err, relay.ErrUnknownTopic) {
			return exitError{code: 1, msg: err.Error()}
		}
		if err != nil {
			if strings.Contains(err.Error(), "relay: invalid config") {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			return err
		}
		printRepublish(e.stdout, sum, *dryRun)
		return nil
	}
	return c
}

// printRepublish prints the summary, and with a dry run the rows it would publish.
func printRepublish(w io.Writer, sum relay.RepublishSummary, dry bool) {
	missing := 0
	for _, m := range sum.Missing {
		missing += len(m.Topics)
	}
	if dry {
		if len(sum.Missing) > 0 {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "EVENT ID\tAGGREGATE\tCREATED AT\tMISSING FROM")
			for _, m := range sum.Missing {
				fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\n", m.EventID, m.AggregateType, m.AggregateID,
					m.CreatedAt.UTC().Format(time.RFC3339Nano), strings.Join(m.Topics, ","))
			}
			_ = tw.Flush()
		}
		fmt.Fprintf(w, "dry run: %d rows in the window (%d records), %d already in Kafka,%s %d would be published\n",
			sum.Rows, sum.Records, sum.InKafka, pendingNote(sum), missing)
		return
	}
	fmt.Fprintf(w, "republished: %d rows in the window (%d records), %d already in Kafka,%s %d published in %d Kafka transactions\n",
		sum.Rows, sum.Records, sum.InKafka, pendingNote(sum), sum.Published, sum.Transactions)
}

// pendingNote mentions the rows left to the relay, when there are any.
func pendingNote(sum relay.RepublishSummary) string {
	if sum.Pending == 0 {
		return ""
	}
	return fmt.Sprintf(" %d still in the slot's stream (left to the relay),", sum.Pending)
}

// progress draws "published n/total" on a terminal (one line, redrawn), and
// a line every few seconds elsewhere.
type progress struct {
	w    io.Writer
	tty  bool
	last time.Time
	drew bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(published, total int) {
	if total == 0 {
		return
	}
	if p.tty {
		width := 30
		filled := width * published / total
		fmt.Fprintf(p.w, "\r[%s%s] %d/%d published", strings.Repeat("#", filled), strings.Repeat(".", width-filled), published, total)
		p.drew = true
		return
	}
	if time.Since(p.last) >= 2*time.Second || published == total {
		fmt.Fprintf(p.w, "republish: %d/%d published\n", published, total)
		p.last = time.Now()
	}
}

func (p *progress) done() {
	if p.drew {
		fmt.Fprintln(p.w)
	}
}
