package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hamba/avro/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Format is a schema language, named as a Confluent-compatible registry's
// schemaType names it.
type Format string

// The formats a schemas folder holds.
const (
	// FormatAvro is an Avro schema, file vN.avsc.
	FormatAvro Format = "AVRO"
	// FormatJSON is a JSON Schema, file vN.json.
	FormatJSON Format = "JSON"
)

// extensions maps a version file's extension to its format.
var extensions = map[string]Format{".avsc": FormatAvro, ".json": FormatJSON}

// ErrInvalid is returned by Load and LoadFiles when the folder breaks the
// layout (a file name that is not vN.avsc or vN.json, a gap in the version
// numbers, a nested folder) or a schema does not parse. The error names the
// file.
var ErrInvalid = errors.New("schema: invalid schemas folder")

// Version is one published version of an event type's schema in one format.
// Published versions are immutable: a change is a new file.
type Version struct {
	// EventType is the folder name: the outbox row's event_type.
	EventType string
	// Format is the schema language.
	Format Format
	// Number is N of vN, from 1.
	Number int
	// Path is the file's path in the folder, slash-separated.
	Path string
	// Source is the file as written.
	Source []byte

	avro avro.Schema
	json *jsonschema.Schema
	codecState
}

// Avro is the parsed schema of an Avro version, nil for other formats.
func (v *Version) Avro() avro.Schema { return v.avro }

// JSONSchema is the compiled schema of a JSON Schema version, nil for other
// formats. It validates payloads (jsonschema.Schema.Validate).
func (v *Version) JSONSchema() *jsonschema.Schema { return v.json }

// Name is how messages name the version: "order.created v2 (AVRO)".
func (v *Version) Name() string {
	return fmt.Sprintf("%s v%d (%s)", v.EventType, v.Number, v.Format)
}

// History is one event type's versions in one format, oldest first, numbered
// 1 to len without gaps.
type History []*Version

// Latest is the newest version, or nil for an empty history.
func (h History) Latest() *Version {
	if len(h) == 0 {
		return nil
	}
	return h[len(h)-1]
}

// Type is one event type: its histories by format.
type Type struct {
	// Name is the event type.
	Name string
	// Histories holds a history for each format the type has files of.
	Histories map[Format]History
}

// Set is a loaded schemas folder: every event type with its histories.
type Set struct {
	types map[string]*Type
}

// Types are the event types, sorted.
func (s *Set) Types() []string {
	names := make([]string, 0, len(s.types))
	for n := range s.types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the event type, or false when the folder has no schema for
// it.
func (s *Set) Lookup(eventType string) (*Type, bool) {
	t, ok := s.types[eventType]
	return t, ok
}

// History is eventType's history in format f, nil when there is none.
func (s *Set) History(eventType string, f Format) History {
	if t, ok := s.types[eventType]; ok {
		return t.Histories[f]
	}
	return nil
}

var (
	eventTypeRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	versionRe   = regexp.MustCompile(`^v([1-9][0-9]*)(\.[a-z]+)$`)
)

// Load reads a schemas folder: fsys's root holds one folder per event type,
// each holding vN.avsc and vN.json files. Markdown files (*.md) anywhere are
// documentation and skipped; anything else is an error, so a typo never
// leaves a schema unchecked.
func Load(fsys fs.FS) (*Set, error) {
	files := map[string][]byte{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files[p] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("schema: read folder: %w", err)
	}
	return LoadFiles(files)
}

// LoadFiles is Load over files keyed by slash-separated path relative to the
// folder, for folders read from elsewhere (a git revision, a test).
func LoadFiles(files map[string][]byte) (*Set, error) {
	s := &Set{types: map[string]*Type{}}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var errs []error
	for _, p := range paths {
		if strings.HasSuffix(p, ".md") {
			continue
		}
		v, err := parseVersion(p, files[p])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t := s.types[v.EventType]
		if t == nil {
			t = &Type{Name: v.EventType, Histories: map[Format]History{}}
			s.types[v.EventType] = t
		}
		t.Histories[v.Format] = append(t.Histories[v.Format], v)
	}
	for _, t := range s.types {
		for f, h := range t.Histories {
			sort.Slice(h, func(i, j int) bool { return h[i].Number < h[j].Number })
			for i, v := range h {
				if v.Number != i+1 {
					errs = append(errs, fmt.Errorf("%w: %s: %s versions must be numbered v1 to v%d without gaps, found v%d", ErrInvalid, v.Path, f, len(h), v.Number))
					break
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// parseVersion checks a file's place in the layout and parses it.
func parseVersion(p string, b []byte) (*Version, error) {
	dir, file := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" || strings.Contains(dir, "/") {
		return nil, fmt.Errorf("%w: %s: want <event_type>/v<N>.avsc or <event_type>/v<N>.json", ErrInvalid, p)
	}
	if !eventTypeRe.MatchString(dir) {
		return nil, fmt.Errorf("%w: %s: %q is not an event type name (letters, digits, '.', '_', '-')", ErrInvalid, p, dir)
	}
	m := versionRe.FindStringSubmatch(file)
	var format Format
	if m != nil {
		format = extensions[m[2]]
	}
	if format == "" {
		return nil, fmt.Errorf("%w: %s: want v<N>.avsc (Avro) or v<N>.json (JSON Schema), N from 1", ErrInvalid, p)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: version number: %v", ErrInvalid, p, err)
	}
	v, err := Parse(p, b)
	if err != nil {
		return nil, err
	}
	v.EventType, v.Number = dir, n
	return v, nil
}

// compileJSON compiles a JSON Schema document on its own: a $ref to another
// file is not resolved.
func compileJSON(p string, b []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	url := "mem:///schemas/" + p
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// Parse parses one schema file outside a folder (`schema check --old FILE
// --new FILE`): the format comes from the extension, .avsc or .json, and
// the version is named by the file.
func Parse(file string, src []byte) (*Version, error) {
	format := extensions[path.Ext(file)]
	if format == "" {
		return nil, fmt.Errorf("%w: %s: want a .avsc (Avro) or .json (JSON Schema) file", ErrInvalid, file)
	}
	v := &Version{EventType: file, Format: format, Number: 1, Path: file, Source: src}
	var err error
	switch format {
	case FormatAvro:
		// A cache per version: every version defines the same names, and a
		// shared cache would resolve one version's references to another's.
		v.avro, err = avro.ParseBytesWithCache(src, "", &avro.SchemaCache{})
	case FormatJSON:
		v.json, err = compileJSON(file, src)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, file, err)
	}
	return v, nil
}
