package relay

// SetAfterKafkaCommit installs fn to run after every Kafka commit and before
// its LSN is confirmed to Postgres: the crash tests exit the process there.
func SetAfterKafkaCommit(cfg *Config, fn func()) { cfg.hooks.afterKafkaCommit = fn }

// SetAfterRepairCommit installs fn to run after the n-th Kafka transaction of
// a gap repair (the relay's, or Republish's) commits.
func SetAfterRepairCommit(cfg *Config, fn func(n int)) { cfg.hooks.repair.afterCommit = fn }

// SetAfterRepublishCommit is SetAfterRepairCommit for RepublishConfig.
func SetAfterRepublishCommit(cfg *RepublishConfig, fn func(n int)) { cfg.hooks.afterCommit = fn }

// TimelineSwitch is timelineSwitch, for its unit test.
var TimelineSwitch = timelineSwitch
