package pgcluster

import "testing"

func TestWithDatabase(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:p@h:5432/postgres?sslmode=disable": "postgres://u:p@h:5432/bench?sslmode=disable",
		"postgres://u@h":      "postgres://u@h/bench",
		"host=/tmp port=5432": "host=/tmp port=5432 dbname=bench",
	} {
		if got := withDatabase(in, "bench"); got != want {
			t.Errorf("withDatabase(%q) = %q, want %q", in, got, want)
		}
	}
}
