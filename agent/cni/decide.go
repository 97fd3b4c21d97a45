package cni

import "context"

// Decision says whether a pod is to be enrolled, and why not.
type Decision struct {
	Enroll bool
	Reason string
}

// Decider decides whether the pod of a request is in the mesh.
type Decider interface {
	Decide(ctx context.Context, r Request) (Decision, error)
}
