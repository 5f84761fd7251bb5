package relay_test

import (
	"context"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
)

// walSenderTimeout is the zombie's wal_sender_timeout: how long Postgres
// waits for a frozen relay before its walsender gives up and frees the slot.
const walSenderTimeout = 2 * time.Second

// withWalSenderTimeout adds options=-c wal_sender_timeout=d to a Postgres
// URL. wal_sender_timeout is a user-settable parameter (Postgres 12+), so a
// replication connection may set its own: only the relay given this URL
// times out fast, the rest of the shared server keeps the default.
func withWalSenderTimeout(t *testing.T, raw string, d time.Duration) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	q := u.Query()
	opt := "-c wal_sender_timeout=" + d.String()
	if o := q.Get("options"); o != "" {
		opt = o + " " + opt
	}
	q.Set("options", opt)
	// pgx does not read "+" as a space in query values: encode it as %20.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

// logSince is a child's log from byte offset off on.
func (c *child) logSince(t *testing.T, off int) string {
	t.Helper()
	out, err := os.ReadFile(c.log)
	require.NoError(t, err)
	return string(out[min(off, len(out)):])
}

func (c *child) logSize(t *testing.T) int {
	return len(c.logSince(t, 0))
}

// TestZombieRelayFrozenWhileStandbyTakesOver freezes the active relay with
// SIGSTOP in the middle of a Kafka transaction (a lingering batch with
// records already on the broker) while a hot standby waits. Postgres frees the
// slot when the frozen relay's walsender times out (wal_sender_timeout=2s on
// the frozen relay's own connections); the standby takes the slot, and its
// InitProducerID on the real transaction coordinator fences the frozen
// producer and aborts its open transaction. Then the zombie gets SIGCONT: it
// must not get one record past read_committed (no duplicate, no record of
// its open transaction's producer epoch committed), and it must notice by
// itself, drop its session and wait as a hot standby, not holding the slot.
// Finally the new active relay is killed and the former zombie takes over
// as any standby would, and every outbox row is in Kafka exactly once.
func TestZombieRelayFrozenWhileStandbyTakesOver(t *testing.T) {
	b, a := setupApache(t, 1)
	ctx := context.Background()
	txnID := "outbox-relay-" + b.slot
	w := startWriter(t, b.url, 10, 3, 5*time.Millisecond, 0)

	zc := b.childConfig()
	zc.URL = withWalSenderTimeout(t, b.url, walSenderTimeout)
	// With a linger the relay spends most of its time inside an open Kafka
	// transaction, which is where a zombie is dangerous.
	zc.Linger = time.Second
	zombie := b.startChild(t, zc)
	zombiePID := b.waitActive(t, 0)
	b.waitRelayed(t, 300, time.Minute)

	sc := b.childConfig()
	sc.Linger = time.Second
	standby := b.startChild(t, sc)
	require.Eventually(t, func() bool { return strings.Contains(standby.logSince(t, 0), "waiting as a hot standby") },
		time.Minute, 50*time.Millisecond, "the second relay never waited as a standby")

	// Freeze the zombie while its transaction is Ongoing on the coordinator,
	// and note that transaction's producer id and epoch.
	var open kadm.DescribedTransaction
	for try := 0; ; try++ {
		require.Less(t, try, 50, "never caught the relay inside an open Kafka transaction")
		require.NoError(t, zombie.cmd.Process.Signal(syscall.SIGSTOP))
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := b.k.Admin().DescribeTransactions(dctx, txnID)
		cancel()
		require.NoError(t, err)
		open = d[txnID]
		if open.State == "Ongoing" && len(open.Topics) > 0 {
			break
		}
		require.NoError(t, zombie.cmd.Process.Signal(syscall.SIGCONT))
		time.Sleep(time.Duration(50+try*37%300) * time.Millisecond)
	}
	frozenAt := time.Now()
	t.Logf("froze the relay (wal_sender_timeout=%s on its walsender) inside transaction producer id %d epoch %d, state %s, partitions %v",
		walSenderTimeout, open.ProducerID, open.ProducerEpoch, open.State, open.Topics)

	standbyPID := b.waitActive(t, zombiePID)
	took := time.Since(frozenAt)
	t.Logf("Postgres freed the slot and the standby took it %s after the freeze", took.Round(time.Millisecond))
	// With the server's default wal_sender_timeout (60s) this would take a
	// minute: the per-connection setting is what freed the slot.
	require.Less(t, took, 20*time.Second)
	// The standby streams only after fencing the zombie: wait until it
	// committed new events.
	before := len(b.readAll(t, 0, time.Minute))
	require.Eventually(t, func() bool { return strings.Contains(standby.logSince(t, 0), "relay: streaming") }, time.Minute, 50*time.Millisecond)
	b.waitRelayed(t, before+200, time.Minute)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	d, err := b.k.Admin().DescribeTransactions(dctx, txnID)
	cancel()
	require.NoError(t, err)
	require.Equal(t, open.ProducerID, d[txnID].ProducerID)
	require.Greater(t, d[txnID].ProducerEpoch, open.ProducerEpoch, "the standby's producer did not bump the epoch past the zombie's")

	off := zombie.logSize(t)
	require.NoError(t, zombie.cmd.Process.Signal(syscall.SIGCONT))
	resumedAt := time.Now()
	require.Eventually(t, func() bool { return strings.Contains(zombie.logSince(t, off), "waiting as a hot standby") },
		time.Minute, 50*time.Millisecond, "the resumed zombie did not fall back to standby")
	noticed := time.Since(resumedAt)
	after := zombie.logSince(t, off)
	require.Contains(t, after, "session ended; restarting from the slot")
	require.False(t, zombie.exited(), "the zombie exited instead of waiting as a standby")
	var activePID int32
	require.NoError(t, b.conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&activePID))
	require.Equal(t, standbyPID, activePID, "the slot changed hands after the zombie resumed")
	for _, l := range strings.Split(after, "\n") {
		if strings.Contains(l, "session ended") {
			t.Logf("zombie, %s after SIGCONT: %s", noticed.Round(time.Millisecond), l)
		}
	}

	// Let the writer and the standby run on, then fail the active relay over
	// to the former zombie.
	time.Sleep(time.Second)
	standby.kill()
	b.waitActive(t, standbyPID)
	time.Sleep(2 * time.Second)
	w.stop()
	n := b.verifyExactlyOnce(t, 2*time.Minute)

	// Broker truth: the zombie's open transaction reached the log and was
	// aborted; none of its records is visible to read_committed.
	committed := b.readAll(t, n, time.Minute)
	lateCommitted, lateCommittedAfterResume := 0, 0
	for _, r := range committed {
		if r.ProducerID == open.ProducerID && r.ProducerEpoch == open.ProducerEpoch {
			lateCommitted++
			if !r.Timestamp.Before(resumedAt) {
				lateCommittedAfterResume++
			}
		}
	}
	aborted := 0
	logged, err := b.k.ReadUncommitted(ctx, b.topic)
	require.NoError(t, err)
	for _, r := range logged {
		if r.ProducerID == open.ProducerID && r.ProducerEpoch == open.ProducerEpoch {
			aborted++
		}
	}
	require.Zero(t, lateCommittedAfterResume, "records the zombie produced after SIGCONT are visible to read_committed")
	if a.TransactionVersion >= 2 {
		// KIP-890: every transaction has its own epoch, so the epoch names the
		// zombie's open transaction exactly.
		require.Zero(t, lateCommitted, "records of the zombie's open transaction are visible to read_committed")
		require.Positive(t, aborted, "the zombie's open transaction left no records in the log: it was not caught mid-transaction")
	}
	t.Logf("%d events exactly once; the zombie's transaction (epoch %d) left %d aborted records, 0 committed; the zombie noticed %s after SIGCONT",
		n, open.ProducerEpoch, aborted, noticed.Round(time.Millisecond))
}
