// Package lagcheck measures consumer-group lag and judges it the way Burrow
// does: `outbox lag` and its Prometheus gauges sit on it. It sits beside the
// pipeline, reading only group offsets and topic ends, and never imports a
// stage.
//
// Lag is measured against the last stable offset (ListOffsets with
// read_committed isolation), and a partition whose only unconsumed entries are
// transaction markers or aborted records counts as caught up, so a
// transactional topic does not show a stuck lag of 1 (the commit marker after
// the last record) or the records of a still-open transaction.
package lagcheck

import "time"

// Status is a partition's or a group's state, after Burrow's evaluation rules.
type Status int

// Statuses. A group is OK, WARN or ERR; a partition is OK, WARN, STOP, STALL or
// REWIND, and a group with any STOP, STALL or REWIND partition is ERR.
const (
	// StatusOK: the consumer keeps up (lag zero at some point in the window) or
	// its lag is shrinking.
	StatusOK Status = iota
	// StatusWarn: the consumer commits but its lag does not shrink over the window.
	StatusWarn
	// StatusErr is a group with a partition in STOP, STALL or REWIND.
	StatusErr
	// StatusStop: the partition has lag and the group has no live member: no one
	// consumes it.
	StatusStop
	// StatusStall: the group has members but the committed offset did not move
	// over the window while lag stayed above zero.
	StatusStall
	// StatusRewind: the committed offset went backwards within the window (an
	// offset reset or a replay).
	StatusRewind
)

// String is the Burrow name of the status.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusWarn:
		return "WARN"
	case StatusErr:
		return "ERR"
	case StatusStop:
		return "STOP"
	case StatusStall:
		return "STALL"
	case StatusRewind:
		return "REWIND"
	}
	return "UNKNOWN"
}

// Severity orders statuses for alerting: OK 0, WARN 1, everything else 2.
func (s Status) Severity() int {
	switch s {
	case StatusOK:
		return 0
	case StatusWarn:
		return 1
	}
	return 2
}

// Sample is one observation of a group's partition.
type Sample struct {
	// At is when the sample was taken.
	At time.Time
	// Committed is the group's committed offset (the next offset to consume).
	Committed int64
	// End is the partition's last stable offset.
	End int64
	// Lag is the number of offsets between the first visible unconsumed record
	// and End; 0 when nothing visible is left to consume.
	Lag int64
	// LagSeconds is how old the oldest unconsumed record is; 0 without lag.
	LagSeconds float64
}

// Evaluate applies Burrow's partition rules to a window of samples, oldest
// first, for a group with the given number of live members:
//
//  1. no lag now, or lag zero at any point in the window: OK;
//  2. lag and no members: STOP (Burrow's "commits stopped arriving", which a
//     sampling tool sees as an empty group);
//  3. the committed offset went backwards: REWIND;
//  4. the committed offset did not move over the window: STALL;
//  5. the committed offset moved but lag never decreased: WARN;
//  6. otherwise OK.
//
// Rules 3-5 need two samples or more; a single sample is OK or STOP.
func Evaluate(window []Sample, members int) Status {
	if len(window) == 0 {
		return StatusOK
	}
	for _, s := range window {
		if s.Lag == 0 {
			return StatusOK
		}
	}
	if members == 0 {
		return StatusStop
	}
	if len(window) < 2 {
		return StatusOK
	}
	for i := 1; i < len(window); i++ {
		if window[i].Committed < window[i-1].Committed {
			return StatusRewind
		}
	}
	if window[0].Committed == window[len(window)-1].Committed {
		return StatusStall
	}
	for i := 1; i < len(window); i++ {
		if window[i].Lag < window[i-1].Lag {
			return StatusOK
		}
	}
	return StatusWarn
}

// GroupStatus folds partition statuses into the group's: ERR if any partition
// is STOP, STALL or REWIND, else WARN if any is WARN, else OK.
func GroupStatus(parts []Status) Status {
	g := StatusOK
	for _, s := range parts {
		switch s {
		case StatusStop, StatusStall, StatusRewind, StatusErr:
			return StatusErr
		case StatusWarn:
			g = StatusWarn
		}
	}
	return g
}
