package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"

	"github.com/outboxrelay/outbox/internal/tracing"
)

// TestExportsToOTLPEndpoint: with OTEL_EXPORTER_OTLP_ENDPOINT set, spans reach
// an OTLP/HTTP receiver when the tracer is shut down.
func TestExportsToOTLPEndpoint(t *testing.T) {
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	require.True(t, tracing.Enabled())

	ctx := context.Background()
	shutdown, err := tracing.Setup(ctx, "outbox-test")
	require.NoError(t, err)
	_, span := otel.Tracer("test").Start(ctx, "sink.call payment")
	span.End()
	require.NoError(t, shutdown(ctx))
	require.Positive(t, posts.Load(), "the span was exported")
}

func TestOffWithoutEndpoint(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	require.False(t, tracing.Enabled())
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	require.False(t, tracing.Enabled())
	shutdown, err := tracing.Setup(context.Background(), "x")
	require.NoError(t, err)
	require.NoError(t, shutdown(context.Background()))
}
