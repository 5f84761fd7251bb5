package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/template"

	"github.com/outboxrelay/outbox/envelope"
)

// RequestBuilder builds the HTTP request for one event. The sink then sets
// Idempotency-Key to the event id and copies traceparent, tracestate and the
// correlation id from the event, overriding what the builder set. An error is
// permanent: the event is dead-lettered without a call.
type RequestBuilder func(ctx context.Context, ev *Event) (*http.Request, error)

// Reconciliation is what a status lookup found out about an unknown call.
type Reconciliation struct {
	// Landed is true when the provider has the call: the event is done.
	// False means the provider never saw it, so calling again is not blind.
	Landed bool
	// ProviderRef is the provider's reference, if the lookup returned one.
	ProviderRef string
}

// Reconciler looks up whether a call whose outcome is unknown reached the
// provider. An error means the lookup itself failed; it is retried with
// backoff and, past the retries, the event is dead-lettered for a person.
type Reconciler func(ctx context.Context, ev *Event) (Reconciliation, error)

// RequestTemplate is the request the binary ships: a JSON POST whose URL and
// headers are text/template strings over Event ({{.ID}}, {{.EventType}},
// {{index .Headers "tenant"}}, {{printf "%s" .Key}}).
type RequestTemplate struct {
	// Method defaults to POST.
	Method string
	// URL is the URL template. Required.
	URL string
	// Headers are header templates.
	Headers map[string]string
	// ContentType defaults to the event's content_type header, then application/json.
	ContentType string
}

// NewTemplateRequest parses t and returns a RequestBuilder sending the event
// payload as the body.
func NewTemplateRequest(t RequestTemplate) (RequestBuilder, error) {
	if t.URL == "" {
		return nil, fmt.Errorf("%w: request URL template is required", ErrInvalidConfig)
	}
	if t.Method == "" {
		t.Method = http.MethodPost
	}
	url, err := template.New("url").Option("missingkey=error").Parse(t.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: URL template: %v", ErrInvalidConfig, err)
	}
	headers := make(map[string]*template.Template, len(t.Headers))
	for k, v := range t.Headers {
		ht, err := template.New(k).Option("missingkey=error").Parse(v)
		if err != nil {
			return nil, fmt.Errorf("%w: header %s template: %v", ErrInvalidConfig, k, err)
		}
		headers[k] = ht
	}
	return func(ctx context.Context, ev *Event) (*http.Request, error) {
		u, err := render(url, ev)
		if err != nil {
			return nil, fmt.Errorf("sink: render URL: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, t.Method, u, bytes.NewReader(ev.Payload))
		if err != nil {
			return nil, fmt.Errorf("sink: build request: %w", err)
		}
		ct := t.ContentType
		if ct == "" {
			ct = ev.Headers[envelope.HeaderContentType]
		}
		if ct == "" {
			ct = envelope.ContentTypeJSON
		}
		req.Header.Set("Content-Type", ct)
		for k, ht := range headers {
			v, err := render(ht, ev)
			if err != nil {
				return nil, fmt.Errorf("sink: render header %s: %w", k, err)
			}
			req.Header.Set(k, v)
		}
		return req, nil
	}, nil
}

func render(t *template.Template, ev *Event) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, ev); err != nil {
		return "", err
	}
	return b.String(), nil
}

// NewLookupReconciler returns a Reconciler that GETs the rendered urlTemplate
// (a text/template over Event, for example
// "https://topup.example/v1/topups/by-key/{{.ID}}") with the Idempotency-Key
// header: 2xx means the call landed (providerRefHeader, when set, names the
// response header holding the provider's reference), 404 means it never did,
// anything else is a failed lookup.
func NewLookupReconciler(urlTemplate, providerRefHeader string, client *http.Client) (Reconciler, error) {
	ut, err := template.New("lookup").Option("missingkey=error").Parse(urlTemplate)
	if err != nil {
		return nil, fmt.Errorf("%w: lookup URL template: %v", ErrInvalidConfig, err)
	}
	if client == nil {
		client = http.DefaultClient
	}
	return func(ctx context.Context, ev *Event) (Reconciliation, error) {
		u, err := render(ut, ev)
		if err != nil {
			return Reconciliation{}, fmt.Errorf("sink: render lookup URL: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return Reconciliation{}, fmt.Errorf("sink: build lookup: %w", err)
		}
		req.Header.Set("Idempotency-Key", ev.IdempotencyKey())
		resp, err := client.Do(req)
		if err != nil {
			return Reconciliation{}, fmt.Errorf("sink: lookup: %w", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			r := Reconciliation{Landed: true}
			if providerRefHeader != "" {
				r.ProviderRef = resp.Header.Get(providerRefHeader)
			}
			return r, nil
		case resp.StatusCode == http.StatusNotFound:
			return Reconciliation{}, nil
		}
		return Reconciliation{}, errors.New("sink: lookup answered " + resp.Status)
	}, nil
}
