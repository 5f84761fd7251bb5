package pgconnect_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/outboxrelay/outbox/internal/pgconnect"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://app:s3cret@db.example:5432/orders?sslmode=require", "postgres://app:xxxxx@db.example:5432/orders?sslmode=require"},
		{"postgresql://app:s3cret@db/orders", "postgresql://app:xxxxx@db/orders"},
		{"POSTGRES://app:s3cret@db/orders", "POSTGRES://app:xxxxx@db/orders"},
		{"postgres://app@db/orders", "postgres://app@db/orders"},
		{"postgres://db/orders", "postgres://db/orders"},
		{"postgres://app:@db/orders", "postgres://app:xxxxx@db/orders"},
		// multi-host: one user info for all hosts
		{"postgres://app:s3cret@h1:5432,h2:5433,h3/orders?target_session_attrs=read-write", "postgres://app:xxxxx@h1:5432,h2:5433,h3/orders?target_session_attrs=read-write"},
		// percent-encoded, and malformed: unescaped @ and / in the password
		{"postgres://app:p%40ss%2Fw@db/orders", "postgres://app:xxxxx@db/orders"},
		{"postgres://app:p@ss/w@db/orders", "postgres://app:xxxxx@db/orders"},
		{"postgres://app:s3cret@db:notaport/orders", "postgres://app:xxxxx@db:notaport/orders"},
		// secrets in the query
		{"postgres://app@db/orders?password=s3cret&sslmode=require", "postgres://app@db/orders?password=xxxxx&sslmode=require"},
		{"postgres://app@db/orders?sslmode=verify-full&sslpassword=keypass&sslkey=/k", "postgres://app@db/orders?sslmode=verify-full&sslpassword=xxxxx&sslkey=/k"},
		{"postgres://app:a@db/orders?Password=b", "postgres://app:xxxxx@db/orders?Password=xxxxx"},
		// key=value DSNs
		{"host=db user=app password=s3cret dbname=orders", "host=db user=app password=xxxxx dbname=orders"},
		{"host=db password = s3cret dbname=orders", "host=db password = xxxxx dbname=orders"},
		{`host=db password='with \' quote and space' dbname=orders`, "host=db password=xxxxx dbname=orders"},
		{`host=db password=back\ slash dbname=orders`, "host=db password=xxxxx dbname=orders"},
		{"host=h1,h2 port=5432,5433 user=app password=s3cret sslpassword=kp", "host=h1,h2 port=5432,5433 user=app password=xxxxx sslpassword=xxxxx"},
		{"host=db user=app password='unterminated dbname=orders", "host=db user=app password=xxxxx"},
		{"host=db user=app", "host=db user=app"},
		{"", ""},
	} {
		got := pgconnect.Redact(tc.in)
		require.Equal(t, tc.want, got, "Redact(%q)", tc.in)
		require.NotContains(t, got, "s3cret")
	}
}
