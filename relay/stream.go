package relay

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sync/semaphore"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/twmb/franz-go/pkg/kgo"
)

// itemKind says what a stream item is.
type itemKind uint8

const (
	itemBegin   itemKind = iota + 1 // a Postgres transaction starts
	itemRow                         // one outbox row, already routed into records
	itemCommit                      // the transaction ends
	itemMessage                     // a non-transactional logical message (heartbeat)
)

// item is one decoded element of the replication stream, handed from the
// stream goroutine to the batching loop.
type item struct {
	kind       itemKind
	lsn        pglogrepl.LSN // begin, commit: the commit LSN; message: the end of its WAL record
	end        pglogrepl.LSN // commit: the transaction's end LSN
	xid        uint32
	commitTime time.Time
	recs       []*kgo.Record
	size       int
}

// stream owns the replication connection: it receives pgoutput, decodes rows
// into Kafka records, and sends standby status updates with the LSN the
// batching loop says is committed to Kafka. It never confirms anything else.
type stream struct {
	conn *pgconn.PgConn
	out  chan []item
	// room holds what the queue may still take, in items: send takes a
	// group's count, the batching loop gives it back once it handled it.
	room     *semaphore.Weighted
	schema   string
	rt       *router
	interval time.Duration
	// timeout is how long the walsender may stay silent (PostgresTimeout).
	timeout time.Duration
	log     *slog.Logger
	m       *metrics

	// confirmed is the LSN committed to Kafka, set by the batching loop.
	confirmed atomic.Uint64
	// walEnd is the server's WAL end from the latest message, for lag metrics.
	walEnd atomic.Uint64

	// group collects items until a commit, a message or the group bounds
	// send them to the batching loop together.
	group      []item
	groupBytes int

	rels     map[uint32]*columns
	cols     []column  // reused by parseInsert
	cur      item      // the open transaction's begin
	src      *txSource // its shared header values
	lastSent pglogrepl.LSN
	next     time.Time
	deadline time.Time // read deadline on the connection
	// heard is when the stream last got a message or finished handling one:
	// time spent waiting for the batching loop does not count as silence.
	heard time.Time
}

// confirm raises the LSN the stream reports to Postgres as flushed.
func (s *stream) confirm(lsn pglogrepl.LSN) {
	for {
		old := s.confirmed.Load()
		if uint64(lsn) <= old || s.confirmed.CompareAndSwap(old, uint64(lsn)) {
			return
		}
	}
}

// pollInterval bounds how long a receive blocks, so a new confirm reaches
// Postgres promptly.
const pollInterval = 100 * time.Millisecond

// run streams until ctx ends (returning nil after a last status update) or the
// connection fails.
func (s *stream) run(ctx context.Context) error {
	s.rels = map[uint32]*columns{}
	s.heard = time.Now()
	for {
		now := time.Now()
		if err := s.maybeStatus(now, false); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return s.finish()
		}
		// A read deadline instead of a context per receive: a context makes
		// pgconn watch it with a goroutine for every message.
		if now.After(s.deadline.Add(-pollInterval / 2)) {
			s.deadline = now.Add(pollInterval)
			if err := s.conn.Conn().SetReadDeadline(s.deadline); err != nil {
				return fmt.Errorf("relay: set read deadline: %w", err)
			}
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return s.finish()
			}
			if pgconn.Timeout(err) {
				// The read deadline only paces the loop; a walsender that
				// answered none of the replies asked for within the timeout
				// is behind a half-open connection, which no read reports.
				if silent := time.Since(s.heard); silent >= s.timeout {
					return fmt.Errorf("relay: nothing from the walsender for %s, not even the replies the relay asked for (PostgresTimeout %s); dropping the replication connection: %w",
						silent.Round(time.Millisecond), s.timeout, err)
				}
				continue
			}
			return fmt.Errorf("relay: receive from walsender: %w", err)
		}
		s.heard = time.Now()
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("relay: parse keepalive: %w", err)
				}
				s.seeWALEnd(pkm.ServerWALEnd)
				if pkm.ReplyRequested {
					// Answer with what is committed to Kafka, never with the
					// keepalive's WAL end.
					if err := s.maybeStatus(time.Now(), true); err != nil {
						return err
					}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("relay: parse XLogData: %w", err)
				}
				s.seeWALEnd(xld.ServerWALEnd)
				if err := s.decode(ctx, xld.WALData); err != nil {
					if ctx.Err() != nil {
						return s.finish()
					}
					return err
				}
				s.heard = time.Now()
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("relay: walsender: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return errors.New("relay: walsender ended the replication stream")
		}
	}
}

func (s *stream) seeWALEnd(lsn pglogrepl.LSN) {
	if uint64(lsn) > s.walEnd.Load() {
		s.walEnd.Store(uint64(lsn))
	}
	c := s.confirmed.Load()
	if c > 0 && uint64(lsn) >= c {
		s.m.lagBytes.Set(float64(uint64(lsn) - c))
	}
}

// maybeStatus sends a standby status update when the confirmed LSN moved, the
// interval passed, or force is set. Once the walsender has been quiet for an
// interval the update asks it for an immediate reply: the stream's ping,
// which Postgres answers with a keepalive (run's silence check relies on it).
func (s *stream) maybeStatus(now time.Time, force bool) error {
	c := pglogrepl.LSN(s.confirmed.Load())
	if !force && c == s.lastSent && now.Before(s.next) {
		return nil
	}
	if c == 0 {
		// Nothing known yet: an update of 0 says nothing and moves nothing.
		s.next = now.Add(s.interval)
		return nil
	}
	ping := now.Sub(s.heard) >= s.interval
	if err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: c, ReplyRequested: ping}); err != nil {
		return fmt.Errorf("relay: send standby status update %s: %w", c, err)
	}
	if c != s.lastSent {
		s.log.Debug("relay: confirmed to Postgres", slog.String("lsn", c.String()))
		s.m.confirmedLSN.Set(float64(c))
	}
	s.lastSent = c
	s.next = now.Add(s.interval)
	return nil
}

// finish sends the last status update on the way out.
func (s *stream) finish() error {
	if s.conn.IsClosed() {
		return nil
	}
	return s.maybeStatus(time.Now(), true)
}

// emit adds an item to the group and hands the group to the batching loop
// at a transaction's end, a message, or the group bounds.
func (s *stream) emit(ctx context.Context, it item) error {
	s.group = append(s.group, it)
	s.groupBytes += it.size
	if it.kind == itemBegin || it.kind == itemRow && len(s.group) < groupItems && s.groupBytes < groupBytes {
		return nil
	}
	g := s.group
	s.group, s.groupBytes = make([]item, 0, min(2*len(g), groupItems)), 0
	return s.send(ctx, g)
}

// send hands a group to the batching loop once the queue has room for it,
// answering Postgres while it waits.
func (s *stream) send(ctx context.Context, g []item) error {
	n := int64(len(g))
	for !s.room.TryAcquire(n) {
		wctx, cancel := context.WithTimeout(ctx, pollInterval)
		err := s.room.Acquire(wctx, n)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := s.maybeStatus(time.Now(), false); err != nil {
			return err
		}
	}
	// The channel holds as many groups as the queue holds items: it never
	// blocks once room is taken.
	s.out <- g
	return nil
}

// decode turns one pgoutput message into stream items.
func (s *stream) decode(ctx context.Context, data []byte) error {
	if len(data) > 0 && data[0] == 'I' {
		rel, cols, err := parseInsert(data, s.cols)
		s.cols = cols
		if err != nil {
			return err
		}
		c, ok := s.rels[rel]
		if !ok {
			return fmt.Errorf("relay: insert into relation %d before its relation message", rel)
		}
		if c == nil {
			return nil
		}
		recs, size, err := s.rt.records(ctx, c, cols, s.src)
		if err != nil {
			return fmt.Errorf("relay: transaction %d at %s: %w", s.cur.xid, s.cur.lsn, err)
		}
		return s.emit(ctx, item{kind: itemRow, recs: recs, size: size})
	}
	lm, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("relay: parse pgoutput message: %w", err)
	}
	switch v := lm.(type) {
	case *pglogrepl.RelationMessage:
		// The root table, or one of its partitions: they share the columns.
		cols, err := newColumns(v)
		if err != nil || v.Namespace != s.schema {
			s.log.Debug("relay: publication streams a table that is not the outbox; its rows are ignored",
				slog.String("table", v.Namespace+"."+v.RelationName))
			s.rels[v.RelationID] = nil
			return nil
		}
		s.rels[v.RelationID] = cols
	case *pglogrepl.BeginMessage:
		s.cur = item{kind: itemBegin, lsn: v.FinalLSN, xid: v.Xid, commitTime: v.CommitTime}
		s.src = newTxSource(v.FinalLSN, v.Xid)
		return s.emit(ctx, s.cur)
	case *pglogrepl.CommitMessage:
		return s.emit(ctx, item{kind: itemCommit, lsn: v.CommitLSN, end: v.TransactionEndLSN, xid: s.cur.xid, commitTime: v.CommitTime})
	case *pglogrepl.LogicalDecodingMessage:
		if !v.Transactional {
			return s.emit(ctx, item{kind: itemMessage, lsn: v.LSN})
		}
	}
	return nil
}
