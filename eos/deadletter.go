package eos

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/envelope"
	"github.com/outboxrelay/outbox/schema"
)

// StageKind is the envelope.DeadLetter Stage value of records this package
// dead-letters.
const StageKind = "transform"

// PanicError is the rejection of a record whose transform panicked; its class
// in the dead-letter headers is "panic".
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("transform panicked: %v", e.Value) }

// RefusedError is the rejection of a record whose outputs the broker refused
// for good (too large, invalid); the transaction that tried them was aborted
// and the input dead-lettered on the retry.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string {
	return "broker refused the transform's output: " + e.Err.Error()
}
func (e *RefusedError) Unwrap() error { return e.Err }

// errNoOutputTopic rejects an output without a topic when Config.OutputTopic is empty.
var errNoOutputTopic = errors.New("eos: transform returned a record without a Topic and the stage has no OutputTopic")

// apply calls the transform, turning a panic into a *PanicError.
func (s *Stage) apply(ctx context.Context, r *kgo.Record) (outs []*kgo.Record, err error) {
	defer func() {
		if v := recover(); v != nil {
			outs, err = nil, &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	if s.cfg.Decoder != nil && schema.IsWire(r.Value) {
		payload, _, err := s.cfg.Decoder.Decode(ctx, r.Value)
		if err != nil {
			return nil, &DecodeError{Err: err}
		}
		in := *r
		in.Value = payload
		return s.cfg.Transform(ctx, &in)
	}
	if s.cfg.ClaimCheck == nil {
		return s.cfg.Transform(ctx, r)
	}
	in, ref, ok, err := s.resolveClaim(ctx, r)
	if err != nil || !ok {
		if err != nil {
			return nil, err
		}
		return s.cfg.Transform(ctx, r)
	}
	outs, err = s.cfg.Transform(ctx, in)
	if err == nil {
		outs = forwardClaim(outs, in.Value, ref)
	}
	return outs, err
}

// deadLetter builds the dead-letter record for r: its key, value and headers,
// followed by the envelope.DeadLetter headers (Kafka Connect and Spring names).
func (s *Stage) deadLetter(r *kgo.Record, cause error) *kgo.Record {
	d := envelope.DeadLetter{
		OriginTopic:     r.Topic,
		OriginPartition: r.Partition,
		OriginOffset:    r.Offset,
		OriginTimestamp: r.Timestamp,
		Group:           s.cfg.Group,
		Stage:           StageKind,
		StageName:       s.cfg.Name,
		ErrorClass:      errorClass(cause),
		ErrorMessage:    cause.Error(),
		Attempt:         1,
		At:              s.cfg.now(),
	}
	headers := slices.Clone(r.Headers)
	for _, h := range d.Headers() {
		headers = append(headers, kgo.RecordHeader(h))
	}
	return &kgo.Record{
		Topic:   s.cfg.DeadLetterTopic,
		Key:     r.Key,
		Value:   r.Value,
		Headers: headers,
	}
}

// errorClass names the kind of err for the dead-letter headers: "panic",
// "claim_check" (an unresolvable reference), or
// the Go type of the innermost wrapped error ("*json.SyntaxError").
func errorClass(err error) string {
	var pe *PanicError
	if errors.As(err, &pe) {
		return "panic"
	}
	var ce *ClaimCheckError
	if errors.As(err, &ce) {
		return "claim_check"
	}
	var de *DecodeError
	if errors.As(err, &de) {
		return "schema"
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	return reflect.TypeOf(err).String()
}
