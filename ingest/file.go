package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"gopkg.in/yaml.v3"
)

// fileConfig is the configuration file of `outbox ingest --config FILE`,
// YAML or JSON (docs/ingest.md). Secrets are never in it: secret_env names
// the environment variables that hold them.
type fileConfig struct {
	MaxBodyBytes int64                 `yaml:"max_body_bytes"`
	DedupWindow  time.Duration         `yaml:"dedup_window"`
	Sources      map[string]fileSource `yaml:"sources"`
}

type fileSource struct {
	Preset     Preset        `yaml:"preset"`
	SecretEnv  []string      `yaml:"secret_env"`
	Tolerance  time.Duration `yaml:"tolerance"`
	Signature  Signature     `yaml:"signature"`
	DeliveryID Field         `yaml:"delivery_id"`
	Mapping    Mapping       `yaml:"mapping"`
	Topics     Topics        `yaml:"topics"`
}

// ParseConfig reads a configuration file (YAML, or JSON, which YAML reads
// too) into a Config with its Sources, MaxBodyBytes and DedupWindow set; the
// caller adds Pool, Logger and Registerer. lookupEnv (os.LookupEnv) resolves
// each source's secret_env names. Unknown keys, a missing variable and every
// invalid setting are errors wrapping ErrConfig that name the source and key.
func ParseConfig(data []byte, lookupEnv func(string) (string, bool)) (Config, error) {
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("%w: the file is empty", ErrConfig)
		}
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	cfg := Config{MaxBodyBytes: fc.MaxBodyBytes, DedupWindow: fc.DedupWindow}
	if cfg.MaxBodyBytes < 0 {
		return Config{}, fmt.Errorf("%w: max_body_bytes %d is negative", ErrConfig, cfg.MaxBodyBytes)
	}
	if cfg.DedupWindow < 0 || (cfg.DedupWindow > 0 && cfg.DedupWindow < time.Second) {
		return Config{}, fmt.Errorf("%w: dedup_window %s is below one second", ErrConfig, cfg.DedupWindow)
	}
	names := make([]string, 0, len(fc.Sources))
	for n := range fc.Sources {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		fs := fc.Sources[name]
		src := Source{
			Name: name, Preset: fs.Preset, Tolerance: fs.Tolerance, Signature: fs.Signature,
			DeliveryID: fs.DeliveryID, Mapping: fs.Mapping, Topics: fs.Topics,
		}
		for _, env := range fs.SecretEnv {
			v, ok := lookupEnv(env)
			if !ok || v == "" {
				errs = append(errs, fmt.Errorf("%w: source %q: secret_env %s is not set", ErrConfig, name, env))
				continue
			}
			src.Secrets = append(src.Secrets, []byte(v))
		}
		if len(fs.SecretEnv) > 0 && len(src.Secrets) < len(fs.SecretEnv) {
			continue
		}
		cfg.Sources = append(cfg.Sources, src)
	}
	if len(errs) == 0 {
		errs = append(errs, validateSources(cfg.Sources))
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return cfg, nil
}
