package console

import "github.com/outboxrelay/outbox/internal/ops/lagcheck"

// LagReport is every consumer group's lag in the shape `outbox lag --json`
// prints (lagcheck.View), so a page's JSON and the command's compare field
// by field.
type LagReport = lagcheck.View

// LagGroup is one consumer group: a transform or a sink.
type LagGroup = lagcheck.ViewGroup

// LagPartition is one partition of a group, measured against the last stable
// offset.
type LagPartition = lagcheck.ViewPartition

func newLagReport(r lagcheck.Report) LagReport { return lagcheck.NewView(r) }
