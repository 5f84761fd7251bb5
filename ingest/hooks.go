package ingest

// hookPoint names a place in a delivery where a test may kill the process
// (the crash test SIGKILLs a child ingest server there).
type hookPoint string

// hookAfterCommit: the delivery's transaction committed, no answer sent yet.
const hookAfterCommit hookPoint = "after_commit"

// testHook is nil outside tests. Only the package's own tests set it.
var testHook func(hookPoint)

func hook(p hookPoint) {
	if testHook != nil {
		testHook(p)
	}
}
