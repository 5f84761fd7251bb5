package envelope

import (
	"encoding/json"
	"strconv"
	"time"
)

// Dead-letter headers. Each dead-lettered record carries both the Kafka Connect
// (`__connect.errors.*`) and the Spring Kafka (`kafka_dlt-*`) names, so the
// tooling users already have reads ours; the outbox.* ones add what neither has.
const (
	HeaderDLTOriginTopic     = "__connect.errors.topic"
	HeaderDLTOriginPartition = "__connect.errors.partition"
	HeaderDLTOriginOffset    = "__connect.errors.offset"
	HeaderDLTStage           = "__connect.errors.stage"
	HeaderDLTStageName       = "__connect.errors.connector.name"
	HeaderDLTErrorClass      = "__connect.errors.exception.class.name"
	HeaderDLTErrorMessage    = "__connect.errors.exception.message"

	HeaderSpringOriginTopic     = "kafka_dlt-original-topic"
	HeaderSpringOriginPartition = "kafka_dlt-original-partition"
	HeaderSpringOriginOffset    = "kafka_dlt-original-offset"
	HeaderSpringOriginTimestamp = "kafka_dlt-original-timestamp"
	HeaderSpringOriginGroup     = "kafka_dlt-original-consumer-group"
	HeaderSpringErrorClass      = "kafka_dlt-exception-fqcn"
	HeaderSpringErrorMessage    = "kafka_dlt-exception-message"

	// HeaderDLTAttempt is how many times the stage tried the record.
	HeaderDLTAttempt = "outbox.dlt.attempt"
	// HeaderDLTHistory is a JSON array of Attempt: every try with its outcome.
	HeaderDLTHistory = "outbox.dlt.history"
	// HeaderDLTAt is when the record was dead-lettered (RFC 3339).
	HeaderDLTAt = "outbox.dlt.at"
	// HeaderReplayCount counts `outbox dlq replay` passes; past the maximum a
	// record is quarantined instead of replayed again.
	HeaderReplayCount = "outbox.dlt.replay_count"
)

// Header is a Kafka record header. It has the same layout as kgo.RecordHeader,
// so a stage converts with kgo.RecordHeader(h) without this package importing
// franz-go (the writer library imports envelope and must stay light).
type Header struct {
	Key   string
	Value []byte
}

// Attempt is one try recorded in a dead letter's history.
type Attempt struct {
	N         int       `json:"n"`
	At        time.Time `json:"at"`
	Status    int       `json:"status,omitempty"` // HTTP status, for the sink
	Error     string    `json:"error,omitempty"`
	LatencyMS int64     `json:"latency_ms,omitempty"`
}

// DeadLetter describes why and from where a record was dead-lettered.
type DeadLetter struct {
	OriginTopic     string
	OriginPartition int32
	OriginOffset    int64
	OriginTimestamp time.Time
	Group           string
	Stage           string // "transform" or "sink"
	StageName       string // the stage instance's name
	ErrorClass      string // e.g. "*json.SyntaxError", "http_422", "panic"
	ErrorMessage    string
	Attempt         int
	History         []Attempt
	At              time.Time
}

// Headers renders d as dead-letter headers, to append to the original record's
// own headers.
func (d DeadLetter) Headers() []Header {
	p := strconv.FormatInt(int64(d.OriginPartition), 10)
	o := strconv.FormatInt(d.OriginOffset, 10)
	at := d.At
	if at.IsZero() {
		at = time.Now()
	}
	hs := []Header{
		{HeaderDLTOriginTopic, []byte(d.OriginTopic)},
		{HeaderDLTOriginPartition, []byte(p)},
		{HeaderDLTOriginOffset, []byte(o)},
		{HeaderDLTStage, []byte(d.Stage)},
		{HeaderDLTStageName, []byte(d.StageName)},
		{HeaderDLTErrorClass, []byte(d.ErrorClass)},
		{HeaderDLTErrorMessage, []byte(d.ErrorMessage)},
		{HeaderSpringOriginTopic, []byte(d.OriginTopic)},
		{HeaderSpringOriginPartition, []byte(p)},
		{HeaderSpringOriginOffset, []byte(o)},
		{HeaderSpringOriginGroup, []byte(d.Group)},
		{HeaderSpringErrorClass, []byte(d.ErrorClass)},
		{HeaderSpringErrorMessage, []byte(d.ErrorMessage)},
		{HeaderDLTAttempt, []byte(strconv.Itoa(d.Attempt))},
		{HeaderDLTAt, []byte(at.UTC().Format(time.RFC3339Nano))},
	}
	if !d.OriginTimestamp.IsZero() {
		hs = append(hs, Header{HeaderSpringOriginTimestamp, []byte(strconv.FormatInt(d.OriginTimestamp.UnixMilli(), 10))})
	}
	if len(d.History) > 0 {
		b, _ := json.Marshal(d.History)
		hs = append(hs, Header{HeaderDLTHistory, b})
	}
	return hs
}

// ParseDeadLetter reads the dead-letter headers back; unknown headers are ignored.
func ParseDeadLetter(headers []Header) DeadLetter {
	var d DeadLetter
	for _, h := range headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderDLTOriginTopic:
			d.OriginTopic = v
		case HeaderDLTOriginPartition:
			n, _ := strconv.ParseInt(v, 10, 32)
			d.OriginPartition = int32(n)
		case HeaderDLTOriginOffset:
			d.OriginOffset, _ = strconv.ParseInt(v, 10, 64)
		case HeaderSpringOriginTimestamp:
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
				d.OriginTimestamp = time.UnixMilli(ms)
			}
		case HeaderSpringOriginGroup:
			d.Group = v
		case HeaderDLTStage:
			d.Stage = v
		case HeaderDLTStageName:
			d.StageName = v
		case HeaderDLTErrorClass:
			d.ErrorClass = v
		case HeaderDLTErrorMessage:
			d.ErrorMessage = v
		case HeaderDLTAttempt:
			d.Attempt, _ = strconv.Atoi(v)
		case HeaderDLTHistory:
			_ = json.Unmarshal(h.Value, &d.History)
		case HeaderDLTAt:
			d.At, _ = time.Parse(time.RFC3339Nano, v)
		}
	}
	return d
}
