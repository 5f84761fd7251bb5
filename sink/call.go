package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/envelope"
)

// bodyHeadBytes is how much of a response body the ledger keeps verbatim.
const bodyHeadBytes = 512

// traceContext reads and writes W3C trace context whatever global propagator
// the program installed (the default global one propagates nothing).
var traceContext = propagation.TraceContext{}

// maxBodyBytes is how much of a response body is read (and digested).
const maxBodyBytes = 1 << 20

// verdict classifies one call's outcome.
type verdict int

const (
	verdictSucceeded verdict = iota
	verdictRetriable         // timeouts, connection errors, 5xx, 408, 409, 429
	verdictPermanent         // other 4xx, 3xx, a request that cannot be built
)

func (v verdict) outcome() string {
	switch v {
	case verdictSucceeded:
		return "succeeded"
	case verdictRetriable:
		return "retriable"
	}
	return "permanent"
}

// callResult is what one call returned, as the ledger records it.
type callResult struct {
	started     time.Time
	latency     time.Duration
	statusCode  int
	digest      string
	head        []byte
	err         error
	verdict     verdict
	class       string        // error class for dead letters and metrics: "http_503", "timeout"
	retryAfter  time.Duration // from a 429/503 Retry-After
	providerRef string
	// indeterminate: the request may have reached the API (a timeout or a
	// broken connection after it was sent), so whether it acted is unknown.
	indeterminate bool
}

// call sends one request for ev to e. It never returns an error of its own:
// every failure is classified into the result.
func call(ctx context.Context, e *Endpoint, ev *Event) callResult {
	ctx, cancel := e.ctxTimeout(ctx)
	defer cancel()
	res := callResult{started: time.Now()}
	req, err := e.Request(ctx, ev)
	if err == nil && req == nil {
		err = errors.New("sink: request builder returned no request")
	}
	if err != nil {
		res.err, res.verdict, res.class = err, verdictPermanent, "build_request"
		return res
	}
	req.Header.Set("Idempotency-Key", ev.IdempotencyKey())
	if v := ev.Headers[envelope.HeaderCorrelationID]; v != "" {
		req.Header.Set("X-Correlation-Id", v)
	}
	// The call is a child span of the trace the order request started: the
	// event carries its traceparent. With no tracer provider installed the span
	// records nothing and the event's own trace context is sent as it is.
	parent := traceContext.Extract(ctx, propagation.MapCarrier(ev.Headers))
	spanCtx, span := otel.Tracer("github.com/outboxrelay/outbox/sink").Start(parent, "sink.call "+e.Name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("outbox.event_id", ev.ID.String()), attribute.Int("outbox.attempt", ev.Attempt)))
	defer span.End()
	traceContext.Inject(spanCtx, propagation.HeaderCarrier(req.Header))
	resp, err := e.Client.Do(req)
	defer func() {
		if res.statusCode != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", res.statusCode))
		}
		if res.verdict != verdictSucceeded {
			span.SetStatus(codes.Error, res.class)
		}
	}()
	if err != nil {
		res.latency = time.Since(res.started)
		res.err, res.verdict, res.class = err, verdictRetriable, errorClass(err)
		// Only a failed dial proves nothing was sent.
		var op *net.OpError
		res.indeterminate = !(errors.As(err, &op) && op.Op == "dial")
		return res
	}
	defer resp.Body.Close()
	h := sha256.New()
	head := make([]byte, 0, bodyHeadBytes)
	buf := make([]byte, 32<<10)
	var readErr error
	for total := 0; total < maxBodyBytes; {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if room := bodyHeadBytes - len(head); room > 0 {
				head = append(head, buf[:min(n, room)]...)
			}
			total += n
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = err
			}
			break
		}
	}
	res.latency = time.Since(res.started)
	res.statusCode = resp.StatusCode
	res.digest = hex.EncodeToString(h.Sum(nil))
	res.head = head
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		// The provider accepted the call; a body cut short does not undo that.
		res.verdict = verdictSucceeded
		if e.ProviderRef != nil {
			res.providerRef = e.ProviderRef(resp, head)
		}
		return res
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusConflict, code == http.StatusTooManyRequests:
		res.verdict = verdictRetriable
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	default:
		res.verdict = verdictPermanent
	}
	res.class = "http_" + strconv.Itoa(code)
	res.err = fmt.Errorf("sink: %s answered %s", e.Name, resp.Status)
	if readErr != nil {
		res.err = fmt.Errorf("%w (reading body: %v)", res.err, readErr)
	}
	return res
}

func errorClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "connection"
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
