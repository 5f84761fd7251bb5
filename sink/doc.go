// Package sink is not built yet.
package sink
