package sink

import (
	"math"
	"math/rand/v2"
	"time"
)

// backoff is the delay before attempt n+1 after attempt n failed: Initial *
// Multiplier^(n-1), capped at Max, minus a random fraction of up to Jitter, and
// never below a Retry-After the provider asked for (itself capped at Max).
func (r *RetryPolicy) backoff(n int, retryAfter time.Duration) time.Duration {
	d := float64(r.Initial) * math.Pow(r.Multiplier, float64(max(n-1, 0)))
	if d > float64(r.Max) {
		d = float64(r.Max)
	}
	if r.Jitter > 0 {
		d -= d * r.Jitter * rand.Float64()
	}
	delay := time.Duration(d)
	if retryAfter > r.Max {
		retryAfter = r.Max
	}
	return max(delay, retryAfter)
}

// tierFor returns the retry tier for a delay: the largest tier not above it,
// or the smallest tier when the delay is below all of them.
func (r *RetryPolicy) tierFor(delay time.Duration) time.Duration {
	t := r.Tiers[0]
	for _, tier := range r.Tiers {
		if tier <= delay {
			t = tier
		}
	}
	return t
}

// tierName formats a tier as a topic suffix: 1s, 10s, 1m, 1h, 250ms.
func tierName(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return itoa(int64(d/time.Hour)) + "h"
	case d%time.Minute == 0:
		return itoa(int64(d/time.Minute)) + "m"
	case d%time.Second == 0:
		return itoa(int64(d/time.Second)) + "s"
	}
	return itoa(int64(d/time.Millisecond)) + "ms"
}

// RetryTopic names the retry tier topic of a source topic.
func RetryTopic(topic string, tier time.Duration) string {
	return topic + ".retry." + tierName(tier)
}

func itoa(n int64) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = digits[n%10]
		n /= 10
	}
	return string(b[i:])
}
