package relaybench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// baseline drains slot with a bare pglogrepl loop that parses every
// message and discards it, until it has seen want commits.
func baseline(ctx context.Context, url, slot string, want int) (time.Duration, time.Duration, error) {
	pcfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return 0, 0, err
	}
	pcfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return 0, 0, fmt.Errorf("bench relay: baseline connect: %w", err)
	}
	defer conn.Close(context.Background())
	cpu0 := selfCPU()
	start := time.Now()
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: []string{
		"proto_version '1'", "publication_names 'outbox_events'", "binary 'true'"}}); err != nil {
		return 0, 0, fmt.Errorf("bench relay: baseline start: %w", err)
	}
	commits := 0
	var last pglogrepl.LSN
	next := time.Now().Add(time.Second)
	for commits < want {
		if time.Now().After(next) {
			_ = pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: last})
			next = time.Now().Add(time.Second)
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return 0, 0, fmt.Errorf("bench relay: baseline receive: %w", err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			return 0, 0, err
		}
		lm, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			return 0, 0, err
		}
		if c, ok := lm.(*pglogrepl.CommitMessage); ok {
			commits++
			last = c.TransactionEndLSN
		}
	}
	return time.Since(start), selfCPU() - cpu0, nil
}
