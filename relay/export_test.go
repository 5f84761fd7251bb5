package relay

// SetAfterKafkaCommit installs fn to run after every Kafka commit and before
// its LSN is confirmed to Postgres: the crash tests exit the process there.
func SetAfterKafkaCommit(cfg *Config, fn func()) { cfg.hooks.afterKafkaCommit = fn }
