package cni

// The socket protocol between weft-cni and the agent: HTTP/1.1 over the
// agent's unix socket (mode 0600: root only), one JSON request per call.
// A refusal is a non-200 status whose body is a WireError.

// Paths on the agent's CNI socket.
const (
	PathAdd    = "/v1/add"
	PathDel    = "/v1/del"
	PathCheck  = "/v1/check"
	PathGC     = "/v1/gc"
	PathStatus = "/v1/status"
)

// Request names one pod sandbox (ADD, DEL, CHECK).
type Request struct {
	Node        string `json:"node"`
	ContainerID string `json:"containerID"`
	Netns       string `json:"netns,omitempty"` // empty in a DEL whose netns is gone
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	UID         string `json:"uid"`
}

// Reply answers ADD and CHECK.
type Reply struct {
	Enrolled bool   `json:"enrolled"`
	Cookie   uint64 `json:"cookie,omitempty"`
	Reason   string `json:"reason,omitempty"` // why not enrolled
}

// GCRequest lists the sandboxes still valid on the node (CNI GC): holds of
// any other container are released.
type GCRequest struct {
	Node        string   `json:"node"`
	ContainerID []string `json:"containerIDs"`
}

// WireError is the body of a refusal; Code is a CNI error code.
type WireError struct {
	Code    uint   `json:"code"`
	Message string `json:"msg"`
	Details string `json:"details,omitempty"`
}
