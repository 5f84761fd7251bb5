package sink

// hookPoint names a place in the call sequence where a test may kill the
// process (the crash tests SIGKILL a child sink there).
type hookPoint string

const (
	hookBeforeCall  hookPoint = "before_call"  // claimed in_flight, nothing sent
	hookAfterCall   hookPoint = "after_call"   // the provider answered, nothing recorded
	hookAfterRecord hookPoint = "after_record" // recorded, offset not yet marked
)

// testHook is nil outside tests. Only the package's own tests set it.
var testHook func(hookPoint)

func hook(p hookPoint) {
	if testHook != nil {
		testHook(p)
	}
}
