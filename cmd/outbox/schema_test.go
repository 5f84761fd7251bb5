package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/testkit/registrytest"
)

// avroRecord is an Avro record schema E with the given fields, as JSON.
func avroRecord(fields ...string) string {
	return `{"type":"record","name":"E","namespace":"t","fields":[` + strings.Join(fields, ",") + `]}`
}

const (
	fieldA        = `{"name":"a","type":"int"}`
	fieldALong    = `{"name":"a","type":"long"}`
	fieldAString  = `{"name":"a","type":"string"}`
	fieldB        = `{"name":"b","type":"string"}`
	fieldBDefault = `{"name":"b","type":"string","default":""}`
	fieldCAliasB  = `{"name":"c","type":"string","aliases":["b"]}`
)

func enumField(symbols string, dflt string) string {
	d := ""
	if dflt != "" {
		d = `,"default":"` + dflt + `"`
	}
	return `{"name":"s","type":{"type":"enum","name":"S","symbols":[` + symbols + `]` + d + `}}`
}

func addrField(zipType string) string {
	return `{"name":"addr","type":{"type":"record","name":"Addr","fields":[{"name":"zip","type":"` + zipType + `"}]}}`
}

// schemaPairs are the changes issue 14 names, with the verdict per mode a
// Confluent-compatible registry gives: "ok", or "RULE@field" for the break
// `schema check` must report.
var schemaPairs = []struct {
	name     string
	old, new string
	want     map[string]string // mode -> verdict
}{
	{"added optional field", avroRecord(fieldA), avroRecord(fieldA, fieldBDefault),
		map[string]string{"BACKWARD": "ok", "FORWARD": "ok", "FULL": "ok"}},
	{"added field without default", avroRecord(fieldA), avroRecord(fieldA, fieldB),
		map[string]string{"BACKWARD": "READER_FIELD_MISSING_DEFAULT_VALUE@b", "FORWARD": "ok", "FULL": "READER_FIELD_MISSING_DEFAULT_VALUE@b"}},
	{"removed field", avroRecord(fieldA, fieldB), avroRecord(fieldA),
		map[string]string{"BACKWARD": "ok", "FORWARD": "READER_FIELD_MISSING_DEFAULT_VALUE@b", "FULL": "READER_FIELD_MISSING_DEFAULT_VALUE@b"}},
	{"removed field with default", avroRecord(fieldA, fieldBDefault), avroRecord(fieldA),
		map[string]string{"BACKWARD": "ok", "FORWARD": "ok", "FULL": "ok"}},
	{"type change int to string", avroRecord(fieldA), avroRecord(fieldAString),
		map[string]string{"BACKWARD": "TYPE_MISMATCH@a", "FORWARD": "TYPE_MISMATCH@a", "FULL": "TYPE_MISMATCH@a"}},
	{"type promotion int to long", avroRecord(fieldA), avroRecord(fieldALong),
		map[string]string{"BACKWARD": "ok", "FORWARD": "TYPE_MISMATCH@a", "FULL": "TYPE_MISMATCH@a"}},
	{"nested type change", avroRecord(addrField("int")), avroRecord(addrField("string")),
		map[string]string{"BACKWARD": "TYPE_MISMATCH@addr.zip", "FORWARD": "TYPE_MISMATCH@addr.zip", "FULL": "TYPE_MISMATCH@addr.zip"}},
	{"enum symbol added", avroRecord(enumField(`"A","B"`, "")), avroRecord(enumField(`"A","B","C"`, "")),
		map[string]string{"BACKWARD": "ok", "FORWARD": "MISSING_ENUM_SYMBOLS@s", "FULL": "MISSING_ENUM_SYMBOLS@s"}},
	{"enum symbol added, enum default", avroRecord(enumField(`"A","B"`, "A")), avroRecord(enumField(`"A","B","C"`, "A")),
		map[string]string{"BACKWARD": "ok", "FORWARD": "ok", "FULL": "ok"}},
	{"enum symbol removed", avroRecord(enumField(`"A","B","C"`, "")), avroRecord(enumField(`"A","B"`, "")),
		map[string]string{"BACKWARD": "MISSING_ENUM_SYMBOLS@s", "FORWARD": "ok", "FULL": "MISSING_ENUM_SYMBOLS@s"}},
	{"default added", avroRecord(fieldA, fieldB), avroRecord(fieldA, fieldBDefault),
		map[string]string{"BACKWARD": "ok", "FORWARD": "ok", "FULL": "ok"}},
	{"field renamed with alias", avroRecord(fieldA, fieldB), avroRecord(fieldA, fieldCAliasB),
		map[string]string{"BACKWARD": "ok", "FORWARD": "READER_FIELD_MISSING_DEFAULT_VALUE@b", "FULL": "READER_FIELD_MISSING_DEFAULT_VALUE@b"}},
}

// runCLI runs the outbox command line in-process and returns its exit
// code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestSchemaCheckMatchesRegistry is the test that matters for issue 14: for
// every pair and mode, `outbox schema check --old --new` gives the verdict a
// real Confluent-compatible registry (Apicurio) gives on the same pair, and
// a break names its rule and field.
func TestSchemaCheckMatchesRegistry(t *testing.T) {
	t.Parallel()
	reg := registryClient{base: registrytest.URL(t), t: t}
	run := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	dir := t.TempDir()
	for i, p := range schemaPairs {
		oldPath := filepath.Join(dir, fmt.Sprintf("p%d-old.avsc", i))
		newPath := filepath.Join(dir, fmt.Sprintf("p%d-new.avsc", i))
		require.NoError(t, os.WriteFile(oldPath, []byte(p.old), 0o644))
		require.NoError(t, os.WriteFile(newPath, []byte(p.new), 0o644))
		for _, mode := range []string{"BACKWARD", "FORWARD", "FULL"} {
			want := p.want[mode]
			code, stdout, stderr := runCLI(t, "schema", "check", "--old", oldPath, "--new", newPath, "--mode", mode)
			subject := fmt.Sprintf("schema-test-%s-%d-%s", run, i, mode)
			registryOK := reg.compatible(subject, mode, p.old, p.new)

			cliOK := code == 0
			require.Contains(t, []int{0, 1}, code, "%s %s: exit %d\nstdout: %s\nstderr: %s", p.name, mode, code, stdout, stderr)
			require.Equal(t, registryOK, cliOK, "%s in %s: the registry says compatible=%v, schema check exit %d\nstdout: %s", p.name, mode, registryOK, code, stdout)
			if want == "ok" {
				require.True(t, cliOK, "%s in %s: want compatible\nstdout: %s", p.name, mode, stdout)
				continue
			}
			rule, field, _ := strings.Cut(want, "@")
			require.Equal(t, 1, code, "%s in %s: want %s", p.name, mode, want)
			require.Contains(t, stdout, "BREAKING: ", "%s in %s", p.name, mode)
			require.Contains(t, stdout, rule+` at field "`+field+`"`, "%s in %s: the message names the rule and the field", p.name, mode)
			require.Contains(t, stderr, "breaking change(s) in mode "+mode)
		}
	}
}

// TestSchemaCheckTransitive: a third version compatible with the second
// but not the first passes BACKWARD and fails BACKWARD_TRANSITIVE, in the
// folder check as in the registry, which refuses to register it.
func TestSchemaCheckTransitive(t *testing.T) {
	t.Parallel()
	reg := registryClient{base: registrytest.URL(t), t: t}
	versions := []string{avroRecord(fieldA), avroRecord(fieldA, fieldBDefault), avroRecord(fieldA, fieldB)}
	dir := t.TempDir()
	writeVersions(t, filepath.Join(dir, "e"), versions...)

	code, stdout, _ := runCLI(t, "schema", "check", "--dir", dir, "--mode", "BACKWARD")
	require.Equal(t, 0, code, stdout)
	code, stdout, _ = runCLI(t, "schema", "check", "--dir", dir, "--mode", "BACKWARD_TRANSITIVE")
	require.Equal(t, 1, code, stdout)
	require.Contains(t, stdout, `e v3 (AVRO) against v1: BACKWARD: READER_FIELD_MISSING_DEFAULT_VALUE at field "b"`)
	require.NotContains(t, stdout, "against v2")

	for _, mode := range []string{"BACKWARD", "BACKWARD_TRANSITIVE"} {
		subject := fmt.Sprintf("schema-test-transitive-%d-%d-%s", os.Getpid(), time.Now().UnixNano(), mode)
		reg.setMode(subject, mode)
		require.True(t, reg.register(subject, versions[0]))
		require.True(t, reg.register(subject, versions[1]))
		require.Equal(t, mode == "BACKWARD", reg.register(subject, versions[2]), "the registry in %s registering v3", mode)
	}
}

// TestSchemaCheckAgainstGit: --against a git revision checks the versions
// added since, and refuses an edited published version; a revision that is
// not one is a usage error.
func TestSchemaCheckAgainstGit(t *testing.T) {
	t.Parallel()
	repo := t.TempDir()
	gitT(t, repo, "init", "-q", "-b", "main")
	dir := filepath.Join(repo, "schemas")
	writeVersions(t, filepath.Join(dir, "order.created"), avroRecord(fieldA))
	gitT(t, repo, "add", ".")
	gitT(t, repo, "commit", "-q", "-m", "v1")

	// A breaking v2: a field the old data lacks, without a default.
	writeVersions(t, filepath.Join(dir, "order.created"), avroRecord(fieldA), avroRecord(fieldA, fieldB))
	code, stdout, stderr := runCLI(t, "schema", "check", "--dir", dir, "--against", "main")
	require.Equal(t, 1, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Contains(t, stdout, `BREAKING: order.created v2 (AVRO) against v1: BACKWARD: READER_FIELD_MISSING_DEFAULT_VALUE at field "b"`)

	// The same change is fine for FORWARD, and with a default for BACKWARD.
	code, stdout, _ = runCLI(t, "schema", "check", "--dir", dir, "--against", "main", "--mode", "forward")
	require.Equal(t, 0, code, stdout)
	writeVersions(t, filepath.Join(dir, "order.created"), avroRecord(fieldA), avroRecord(fieldA, fieldBDefault))
	code, stdout, _ = runCLI(t, "schema", "check", "--dir", dir, "--against", "main", "--mode", "FULL_TRANSITIVE")
	require.Equal(t, 0, code, stdout)
	require.Contains(t, stdout, "ok: 1 version(s) compatible in mode FULL_TRANSITIVE")

	// Editing the published v1 instead is caught even when compatible.
	writeVersions(t, filepath.Join(dir, "order.created"), avroRecord(fieldA, fieldBDefault))
	code, stdout, _ = runCLI(t, "schema", "check", "--dir", dir, "--against", "main")
	require.Equal(t, 1, code, stdout)
	require.Contains(t, stdout, "order.created v1 (AVRO): VERSION_REWRITTEN")

	code, _, stderr = runCLI(t, "schema", "check", "--dir", dir, "--against", "no-such-branch")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "not a git revision")
}

const jsonV1 = `{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}}}`

// TestSchemaCheckAgainstRegistry: --against URL lets the registry decide in
// its configured mode, for Avro and JSON Schema (each in its own subject),
// naming the subject.
func TestSchemaCheckAgainstRegistry(t *testing.T) {
	t.Parallel()
	reg := registryClient{base: registrytest.URL(t), t: t}
	suffix := fmt.Sprintf("%d.%d", os.Getpid(), time.Now().UnixNano())
	avroType, jsonType := "reg.avro."+suffix, "reg.json."+suffix
	reg.setMode(avroType, "BACKWARD")
	require.True(t, reg.register(avroType, avroRecord(fieldA)))
	// A JSON Schema history is the subject <event_type>-json (schema.Subject).
	reg.setMode(jsonType+"-json", "BACKWARD")
	require.True(t, reg.registerType(jsonType+"-json", jsonV1, "JSON"))

	dir := t.TempDir()
	writeVersions(t, filepath.Join(dir, avroType), avroRecord(fieldA), avroRecord(fieldA, fieldBDefault))
	// Removing a property of an open content model is compatible in
	// Confluent's JSON Schema rules (adding one is not).
	writeFile(t, filepath.Join(dir, jsonType, "v1.json"), jsonV1)
	writeFile(t, filepath.Join(dir, jsonType, "v2.json"), `{"type":"object","properties":{"a":{"type":"integer"}}}`)
	code, stdout, stderr := runCLI(t, "schema", "check", "--dir", dir, "--against", reg.base)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Contains(t, stdout, "ok: 2 version(s)")

	// A breaking v3 of each: the registry says no, and the line names the
	// subject's event type.
	writeVersions(t, filepath.Join(dir, avroType), avroRecord(fieldA), avroRecord(fieldA, fieldBDefault), avroRecord(fieldAString))
	writeFile(t, filepath.Join(dir, jsonType, "v3.json"), `{"type":"object","properties":{"a":{"type":"string"}}}`)
	code, stdout, stderr = runCLI(t, "schema", "check", "--dir", dir, "--against", reg.base)
	require.Equal(t, 1, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Contains(t, stdout, "BREAKING: "+avroType+" v3 (AVRO): ")
	require.Contains(t, stdout, "BREAKING: "+jsonType+" v3 (JSON): ")
	require.Contains(t, stdout, "subject "+avroType)
	require.Contains(t, stdout, "subject "+jsonType+"-json")

	code, _, stderr = runCLI(t, "schema", "check", "--dir", dir, "--against", reg.base, "--mode", "FULL")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "the registry checks in the mode it has configured")
}

// TestSchemaCheckUsage pins exit 2 for what cannot be checked as asked, and
// the folder's own history check with JSON Schema left to a registry.
func TestSchemaCheckUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.avsc"), avroRecord(fieldA))
	writeFile(t, filepath.Join(dir, "a.json"), `{"type":"object"}`)
	for _, args := range [][]string{
		{"--old", filepath.Join(dir, "a.avsc")},
		{"--old", filepath.Join(dir, "a.avsc"), "--new", filepath.Join(dir, "a.json")},
		{"--old", filepath.Join(dir, "a.json"), "--new", filepath.Join(dir, "a.json")},
		{"--old", filepath.Join(dir, "a.avsc"), "--new", filepath.Join(dir, "a.avsc"), "--against", "main"},
		{"--mode", "SIDEWAYS"},
		{"--dir", filepath.Join(dir, "missing")},
	} {
		code, _, stderr := runCLI(t, append([]string{"schema", "check"}, args...)...)
		require.Equal(t, 2, code, "%v: %s", args, stderr)
	}

	folder := filepath.Join(dir, "schemas")
	writeFile(t, filepath.Join(folder, "x", "v1.json"), `{"type":"object"}`)
	writeFile(t, filepath.Join(folder, "x", "v2.json"), `{"type":"object"}`)
	code, stdout, stderr := runCLI(t, "schema", "check", "--dir", folder)
	require.Equal(t, 0, code, stdout)
	require.Contains(t, stderr, "1 JSON Schema version(s) not checked here (x v2 (JSON))")

	writeFile(t, filepath.Join(folder, "x", "v4.avsc"), avroRecord(fieldA))
	code, _, stderr = runCLI(t, "schema", "check", "--dir", folder)
	require.Equal(t, 1, code, "a broken folder fails the check")
	require.Contains(t, stderr, "x/v4.avsc")
}

// TestSchemasFolderIsCompatible runs the CI step on the repository's own
// schemas folder: every published version is compatible with the ones
// before it.
func TestSchemasFolderIsCompatible(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, "schema", "check", "--dir", "../../schemas", "--mode", "FULL_TRANSITIVE")
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

// writeVersions makes dir hold exactly v1.avsc... of versions.
func writeVersions(t *testing.T, dir string, versions ...string) {
	t.Helper()
	old, _ := filepath.Glob(filepath.Join(dir, "v*.avsc"))
	for _, f := range old {
		require.NoError(t, os.Remove(f))
	}
	for i, v := range versions {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("v%d.avsc", i+1)), v)
	}
}

func gitT(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %v: %s", args, out)
}

// registryClient speaks the Confluent API to the test registry.
type registryClient struct {
	base string
	t    *testing.T
}

var registryCalls atomic.Int64

func (r registryClient) do(method, path string, body any) (int, map[string]any) {
	r.t.Helper()
	registryCalls.Add(1)
	b, err := json.Marshal(body)
	require.NoError(r.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, bytes.NewReader(b))
	require.NoError(r.t, err)
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(r.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(r.t, err)
	var got map[string]any
	require.NoError(r.t, json.Unmarshal(raw, &got), "%s %s: %s", method, path, raw)
	return resp.StatusCode, got
}

func (r registryClient) setMode(subject, mode string) {
	r.t.Helper()
	code, got := r.do(http.MethodPut, "/config/"+url.PathEscape(subject), map[string]string{"compatibility": mode})
	require.Equal(r.t, http.StatusOK, code, "set %s to %s: %v", subject, mode, got)
}

func (r registryClient) register(subject, schema string) bool {
	r.t.Helper()
	return r.registerType(subject, schema, "")
}

// registerType registers a version and reports whether the registry took
// it (409 is its "incompatible").
func (r registryClient) registerType(subject, schema, schemaType string) bool {
	r.t.Helper()
	body := map[string]string{"schema": schema}
	if schemaType != "" {
		body["schemaType"] = schemaType
	}
	code, got := r.do(http.MethodPost, "/subjects/"+url.PathEscape(subject)+"/versions", body)
	require.Contains(r.t, []int{http.StatusOK, http.StatusConflict}, code, "register in %s: %v", subject, got)
	return code == http.StatusOK
}

// compatible is the registry's verdict on new after old in mode: it sets
// the subject's mode, registers old, and asks about new.
func (r registryClient) compatible(subject, mode, old, new string) bool {
	r.t.Helper()
	r.setMode(subject, mode)
	require.True(r.t, r.register(subject, old))
	code, got := r.do(http.MethodPost, "/compatibility/subjects/"+url.PathEscape(subject)+"/versions/latest", map[string]string{"schema": new})
	require.Equal(r.t, http.StatusOK, code, "compatibility of %s: %v", subject, got)
	ok, isBool := got["is_compatible"].(bool)
	require.True(r.t, isBool, "compatibility of %s: %v", subject, got)
	return ok
}
