package ingest

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// opensslHMAC computes HMAC-SHA256(secret, data) in hex with the openssl
// command: a second implementation the presets are checked against.
func opensslHMAC(t *testing.T, secret, data string) string {
	t.Helper()
	cmd := exec.Command("openssl", "dgst", "-sha256", "-hmac", secret)
	cmd.Stdin = strings.NewReader(data)
	out, err := cmd.Output()
	require.NoError(t, err, "openssl dgst")
	// "SHA2-256(stdin)= HEX" or "(stdin)= HEX", by openssl version.
	_, mac, ok := strings.Cut(strings.TrimSpace(string(out)), "= ")
	require.True(t, ok, "openssl output %q", out)
	return mac
}

// validSource returns s with its preset's defaults filled in.
func validSource(t *testing.T, s Source) Source {
	t.Helper()
	all := []Source{s}
	require.NoError(t, validateSources(all))
	return all[0]
}

// TestStripeSignature checks the Stripe preset against a signature openssl
// computes over "t.body", with secret rotation, several v1 entries, the
// tolerance on both sides, and malformed headers.
func TestStripeSignature(t *testing.T) {
	t.Parallel()
	body := `{"id":"evt_1","object":"event"}`
	const ts = 1700000000
	now := time.Unix(ts, 0)
	mac := opensslHMAC(t, stripeSecret, "1700000000."+body)
	header := "t=1700000000,v1=" + mac
	src := Source{Name: "s", Preset: PresetStripe, Secrets: [][]byte{[]byte(stripeSecret)}}
	require.NoError(t, validateSources([]Source{src}))
	verify := func(s Source, header string, at time.Time) error {
		s = validSource(t, s)
		return s.verify(http.Header{"Stripe-Signature": {header}}, []byte(body), at)
	}
	require.NoError(t, verify(src, header, now))
	require.NoError(t, verify(src, header, now.Add(5*time.Minute)), "at the edge of the default tolerance")
	require.ErrorIs(t, verify(src, header, now.Add(5*time.Minute+time.Second)), ErrTimestampOutsideTolerance)
	require.ErrorIs(t, verify(src, header, now.Add(-6*time.Minute)), ErrTimestampOutsideTolerance, "a timestamp in the future too")
	wide := src
	wide.Tolerance = time.Hour
	require.NoError(t, verify(wide, header, now.Add(30*time.Minute)))

	// Rotation: the old secret first, the new one still verifies; Stripe's
	// two v1 entries while it rolls a secret, one of them ours.
	rotated := Source{Name: "s", Preset: PresetStripe, Secrets: [][]byte{[]byte("whsec_old"), []byte(stripeSecret)}}
	require.NoError(t, verify(rotated, header, now))
	require.NoError(t, verify(src, "t=1700000000,v1="+opensslHMAC(t, "other", "1700000000."+body)+",v1="+mac+",v0=abc", now))

	other := Source{Name: "s", Preset: PresetStripe, Secrets: [][]byte{[]byte("whsec_other")}}
	require.ErrorIs(t, verify(other, header, now), ErrSignatureMismatch)
	require.ErrorIs(t, verify(src, "t=1700000001,v1="+mac, now), ErrSignatureMismatch, "the timestamp is signed")
	require.ErrorIs(t, verify(src, "", now), ErrSignatureMissing)
	require.ErrorIs(t, verify(src, "v1="+mac, now), ErrSignatureMalformed)
	require.ErrorIs(t, verify(src, "t=abc,v1="+mac, now), ErrSignatureMalformed)
	require.ErrorIs(t, verify(src, "t=1700000000", now), ErrSignatureMalformed)
	require.ErrorIs(t, verify(src, "garbage", now), ErrSignatureMalformed)
}

// TestGitHubSignature checks the GitHub preset against GitHub's documented
// example (docs "Validating webhook deliveries": secret "It's a Secret to
// Everybody", payload "Hello, World!") and against openssl.
func TestGitHubSignature(t *testing.T) {
	t.Parallel()
	src := validSource(t, Source{Name: "g", Preset: PresetGitHub, Secrets: [][]byte{[]byte(githubSecret)}})
	verify := func(header, body string) error {
		return src.verify(http.Header{"X-Hub-Signature-256": {header}}, []byte(body), time.Now())
	}
	const documented = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	require.Equal(t, documented, "sha256="+opensslHMAC(t, githubSecret, "Hello, World!"), "openssl agrees with GitHub's docs")
	require.NoError(t, verify(documented, "Hello, World!"))
	require.ErrorIs(t, verify(documented, "Hello, World?"), ErrSignatureMismatch)
	require.ErrorIs(t, verify(strings.TrimPrefix(documented, "sha256="), "Hello, World!"), ErrSignatureMalformed, "the prefix is required")
	require.ErrorIs(t, verify("sha256=zz", "Hello, World!"), ErrSignatureMalformed)
	require.ErrorIs(t, verify("", "Hello, World!"), ErrSignatureMissing)
}

// TestGenericSignature checks hex and base64 MACs, with and without prefix.
func TestGenericSignature(t *testing.T) {
	t.Parallel()
	body := `{"id":1}`
	hexMAC := opensslHMAC(t, genericSecret, body)
	out, err := exec.Command("bash", "-c", "printf '%s' '"+body+"' | openssl dgst -sha256 -hmac '"+genericSecret+"' -binary | openssl base64 -A").Output()
	require.NoError(t, err)
	b64MAC := strings.TrimSpace(string(out))
	for _, tc := range []struct {
		sig    Signature
		header string
		want   error
	}{
		{Signature{Header: "x-sig"}, hexMAC, nil},
		{Signature{Header: "X-Sig", Encoding: "base64"}, b64MAC, nil},
		{Signature{Header: "X-Sig", Encoding: "base64", Prefix: "v1="}, "v1=" + b64MAC, nil},
		{Signature{Header: "X-Sig", Encoding: "base64", Prefix: "v1="}, b64MAC, ErrSignatureMalformed},
		{Signature{Header: "X-Sig", Encoding: "base64"}, hexMAC, ErrSignatureMalformed},
		{Signature{Header: "X-Sig"}, strings.Repeat("0", 64), ErrSignatureMismatch},
		{Signature{Header: "X-Sig"}, "", ErrSignatureMissing},
	} {
		src := validSource(t, Source{Name: "x", Preset: PresetGeneric, Secrets: [][]byte{[]byte(genericSecret)}, Signature: tc.sig, DeliveryID: "header:X-Id"})
		err := src.verify(http.Header{"X-Sig": {tc.header}}, []byte(body), time.Now())
		if tc.want == nil {
			require.NoError(t, err, "%+v", tc.sig)
		} else {
			require.ErrorIs(t, err, tc.want, "%+v %q", tc.sig, tc.header)
		}
	}
}
