package relay

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/claimcheck"
	"github.com/outboxrelay/outbox/envelope"
)

// columns maps the events table's columns to their positions in a pgoutput
// tuple, taken from the RelationMessage the stream sends before the first row.
type columns struct {
	eventID, aggregateType, aggregateID, eventType, topic, fanout, kind, contentType, payload, headers, occurredAt int
}

// newColumns finds the columns the relay needs in rel.
func newColumns(rel *pglogrepl.RelationMessage) (*columns, error) {
	idx := map[string]int{}
	for i, c := range rel.Columns {
		idx[c.Name] = i
	}
	c := &columns{}
	for name, dst := range map[string]*int{
		"event_id": &c.eventID, "aggregate_type": &c.aggregateType, "aggregate_id": &c.aggregateID, "event_type": &c.eventType,
		"topic": &c.topic, "fanout_topics": &c.fanout, "kind": &c.kind, "content_type": &c.contentType, "payload": &c.payload,
		"headers": &c.headers, "occurred_at": &c.occurredAt,
	} {
		i, ok := idx[name]
		if !ok {
			return nil, fmt.Errorf("relay: relation %s.%s has no column %q: is the publication on the outbox events table?", rel.Namespace, rel.RelationName, name)
		}
		*dst = i
	}
	return c, nil
}

// router turns a decoded row into Kafka records.
type router struct {
	eventTemplate, recordTemplate string
	enc                           ValueEncoder
	schemaDLT                     string
}

// ValueEncoder turns an event's payload into a record value; *schema.Wire
// is one. encoded is false when it leaves the payload as it is (an event
// type it has no schema for). An error that errors.Is ErrSchemaMismatch
// is the payload's fault; any other (the registry down) is retried from
// the slot.
type ValueEncoder interface {
	Encode(ctx context.Context, eventType string, payload []byte) (value []byte, encoded bool, err error)
}

// HeaderSchemaError, on a record in Config.SchemaDeadLetterTopic, says why
// the Encoder refused the event's payload.
const HeaderSchemaError = "outbox.schema-error"

// expandTemplate fills a topic template.
func expandTemplate(tmpl, aggregateType, eventType, kind string) string {
	if !strings.Contains(tmpl, "{") {
		return tmpl
	}
	return strings.NewReplacer(
		"{aggregate_type}", envelope.TopicSafe(aggregateType),
		"{event_type}", envelope.TopicSafe(eventType),
		"{kind}", kind,
	).Replace(tmpl)
}

// pgEpoch is 2000-01-01, the origin of Postgres binary timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// records decodes one binary pgoutput tuple of the events table into the
// records it becomes: one on its topic and one per fan-out topic. src holds
// its transaction's commit LSN and id. The returned size counts payload and
// key bytes.
func (rt *router) records(ctx context.Context, c *columns, cols []column, src *txSource) ([]*kgo.Record, int, error) {
	get := func(i int) ([]byte, error) {
		if i >= len(cols) {
			return nil, fmt.Errorf("relay: tuple has %d columns, want more than %d", len(cols), i)
		}
		col := cols[i]
		switch col.kind {
		case pglogrepl.TupleDataTypeBinary:
			return col.data, nil
		case pglogrepl.TupleDataTypeNull:
			return nil, nil
		default:
			return nil, fmt.Errorf("relay: column %d arrived as %q, want binary", i, col.kind)
		}
	}
	var f [11][]byte
	for i, idx := range [...]int{c.eventID, c.aggregateType, c.aggregateID, c.eventType, c.topic, c.kind, c.contentType, c.payload, c.headers, c.occurredAt, c.fanout} {
		b, err := get(idx)
		if err != nil {
			return nil, 0, err
		}
		f[i] = b
	}
	idb, aggType, aggID, eventType, topicB, kind, contentType, payload, hdrs, occ, fanRaw := f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10]
	if len(idb) != 16 {
		return nil, 0, fmt.Errorf("relay: event_id is %d bytes, want 16", len(idb))
	}

	// One allocation holds every byte the record keeps (the stream's buffer
	// is reused for the next message), sub-sliced for key, value and headers.
	buf := make([]byte, 0, 36+len(aggType)+len(aggID)+len(eventType)+len(kind)+len(contentType)+len(payload)+40)
	add := func(b []byte) []byte {
		n := len(buf)
		buf = append(buf, b...)
		return buf[n:len(buf):len(buf)]
	}
	n := len(buf)
	buf = appendUUID(buf, idb)
	eventID := buf[n:len(buf):len(buf)]
	aggTypeV, aggIDV, eventTypeV, kindV, contentTypeV, payloadV := add(aggType), add(aggID), add(eventType), add(kind), add(contentType), add(payload)
	var occV []byte
	if len(occ) == 8 {
		us := int64(binary.BigEndian.Uint64(occ))
		n := len(buf)
		buf = pgEpoch.Add(time.Duration(us)*time.Microsecond).AppendFormat(buf, time.RFC3339Nano)
		occV = buf[n:len(buf):len(buf)]
	}

	fanout, err := decodeTextArray(fanRaw)
	if err != nil {
		return nil, 0, fmt.Errorf("relay: event %s fanout_topics: %w", eventID, err)
	}
	topic := string(topicB)
	if topic == "" {
		isRecord := string(kind) == envelope.KindRecord
		tmpl := rt.eventTemplate
		if isRecord {
			tmpl = rt.recordTemplate
		}
		if strings.Contains(tmpl, "{") {
			topic = expandTemplate(tmpl, string(aggType), string(eventType), string(kind))
		} else {
			topic = tmpl
		}
	}

	// The record and its headers in one allocation too.
	rh := &struct {
		rec  kgo.Record
		hdrs [9]kgo.RecordHeader
	}{}
	rh.hdrs = [9]kgo.RecordHeader{
		{Key: envelope.HeaderEventID, Value: eventID},
		{Key: envelope.HeaderAggregateType, Value: aggTypeV},
		{Key: envelope.HeaderAggregateID, Value: aggIDV},
		{Key: envelope.HeaderEventType, Value: eventTypeV},
		{Key: envelope.HeaderKind, Value: kindV},
		{Key: envelope.HeaderContentType, Value: contentTypeV},
		{Key: envelope.HeaderSourceLSN, Value: src.lsnText},
		{Key: envelope.HeaderSourceXID, Value: src.xidText},
		{Key: envelope.HeaderOccurredAt, Value: occV},
	}
	headers := rh.hdrs[:]
	if occV == nil {
		headers = headers[:8]
	}
	// jsonb binary: a version byte (1) then the JSON text.
	if len(hdrs) > 1 && hdrs[0] == 1 && !(len(hdrs) == 3 && string(hdrs[1:]) == "{}") {
		var m map[string]any
		if err := json.Unmarshal(hdrs[1:], &m); err != nil {
			return nil, 0, fmt.Errorf("relay: event %s headers: %w", eventID, err)
		}
		headers = append(headers[:len(headers):len(headers)], make([]kgo.RecordHeader, 0, len(m))...)
		for k, v := range m {
			var val []byte
			switch v := v.(type) {
			case string:
				val = []byte(v)
			case nil:
				continue
			default:
				val, _ = json.Marshal(v)
			}
			headers = append(headers, kgo.RecordHeader{Key: k, Value: val})
		}
	}

	if rt.enc != nil && !hasHeader(headers, claimcheck.HeaderRef) {
		v, _, err := rt.enc.Encode(ctx, string(eventTypeV), payloadV)
		switch {
		case errors.Is(err, ErrSchemaMismatch) && rt.schemaDLT != "":
			// The event goes to the dead-letter topic alone, as written.
			headers = append(headers[:len(headers):len(headers)], kgo.RecordHeader{Key: HeaderSchemaError, Value: []byte(err.Error())})
			rh.rec = kgo.Record{Topic: rt.schemaDLT, Key: aggIDV, Value: payloadV, Headers: headers}
			return []*kgo.Record{&rh.rec}, len(payloadV) + len(aggIDV), nil
		case errors.Is(err, ErrSchemaMismatch):
			return nil, 0, fmt.Errorf("relay: event %s: %w; set a schema dead-letter topic (--schema-dead-letter) to move it aside, or publish a schema version that accepts it", eventID, err)
		case err != nil:
			return nil, 0, fmt.Errorf("relay: encode event %s (%s): %w", eventID, eventTypeV, err)
		}
		payloadV = v
	}

	rh.rec = kgo.Record{Topic: topic, Key: aggIDV, Value: payloadV, Headers: headers}
	size := len(payloadV) + len(aggIDV)
	if len(fanout) == 0 {
		return []*kgo.Record{&rh.rec}, size, nil
	}
	recs := make([]*kgo.Record, 0, 1+len(fanout))
	recs = append(recs, &rh.rec)
	for _, ft := range fanout {
		if ft == "" || ft == topic {
			continue
		}
		recs = append(recs, &kgo.Record{Topic: ft, Key: aggIDV, Value: payloadV, Headers: headers})
		size += len(payloadV) + len(aggIDV)
	}
	return recs, size, nil
}

// hasHeader reports whether headers hold key.
func hasHeader(headers []kgo.RecordHeader, key string) bool {
	for _, h := range headers {
		if h.Key == key {
			return true
		}
	}
	return false
}

// txSource is the header values every row of one Postgres transaction
// shares, formatted once at its Begin. Records share the slices read-only.
type txSource struct {
	lsnText, xidText []byte
}

func newTxSource(lsn pglogrepl.LSN, xid uint32) *txSource {
	return &txSource{lsnText: []byte(lsn.String()), xidText: strconv.AppendUint(nil, uint64(xid), 10)}
}

// column is one value of a pgoutput tuple: its kind ('b' binary, 'n' null,
// 'u' unchanged TOAST, 't' text) and its bytes, which alias the message.
type column struct {
	kind byte
	data []byte
}

// parseInsert parses a pgoutput Insert message ('I', relation id, 'N', tuple)
// into cols without copying the values; pglogrepl's parser copies byte by
// byte, which was the relay's largest CPU cost.
func parseInsert(data []byte, cols []column) (uint32, []column, error) {
	if len(data) < 8 || data[0] != 'I' || data[5] != 'N' {
		return 0, cols, fmt.Errorf("relay: malformed insert message")
	}
	rel := binary.BigEndian.Uint32(data[1:])
	n := int(binary.BigEndian.Uint16(data[6:]))
	p := 8
	cols = cols[:0]
	for i := 0; i < n; i++ {
		if p >= len(data) {
			return 0, cols, fmt.Errorf("relay: insert message truncated at column %d", i)
		}
		kind := data[p]
		p++
		switch kind {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if p+4 > len(data) {
				return 0, cols, fmt.Errorf("relay: insert message truncated at column %d", i)
			}
			l := int(binary.BigEndian.Uint32(data[p:]))
			p += 4
			if l < 0 || p+l > len(data) {
				return 0, cols, fmt.Errorf("relay: insert message truncated at column %d", i)
			}
			cols = append(cols, column{kind: kind, data: data[p : p+l : p+l]})
			p += l
		default:
			cols = append(cols, column{kind: kind})
		}
	}
	return rel, cols, nil
}

// appendUUID appends the canonical form of a 16-byte UUID to dst.
func appendUUID(dst, b []byte) []byte {
	var buf [36]byte
	hex.Encode(buf[0:8], b[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], b[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], b[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], b[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], b[10:16])
	return append(dst, buf[:]...)
}

// decodeTextArray decodes a one-dimensional text[] in Postgres binary array format.
func decodeTextArray(b []byte) ([]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 12 {
		return nil, fmt.Errorf("array header is %d bytes", len(b))
	}
	ndim := int(binary.BigEndian.Uint32(b))
	if ndim == 0 {
		return nil, nil
	}
	if ndim != 1 {
		return nil, fmt.Errorf("array has %d dimensions, want 1", ndim)
	}
	if len(b) < 20 {
		return nil, fmt.Errorf("array header is %d bytes", len(b))
	}
	n := int(binary.BigEndian.Uint32(b[12:]))
	p := 20
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if p+4 > len(b) {
			return nil, fmt.Errorf("array element %d truncated", i)
		}
		l := int(int32(binary.BigEndian.Uint32(b[p:])))
		p += 4
		if l < 0 {
			continue
		}
		if p+l > len(b) {
			return nil, fmt.Errorf("array element %d truncated", i)
		}
		out = append(out, string(b[p:p+l]))
		p += l
	}
	return out, nil
}
