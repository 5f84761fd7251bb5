package pgschema_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/pgschema"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{pgschema.Default, "orders_outbox", "_x", "a" + strings.Repeat("b", 62)} {
		require.NoError(t, pgschema.Validate(ok), ok)
	}
	for _, bad := range []string{"", "Outbox", "1outbox", "out-box", "out box", `out"box`, "a" + strings.Repeat("b", 63)} {
		err := pgschema.Validate(bad)
		require.ErrorIs(t, err, pgschema.ErrBadSchema, bad)
		require.Contains(t, err.Error(), "got ")
	}
}
