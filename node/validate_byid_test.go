package node

import (
	"testing"

	"github.com/zlmesh/zlmesh/api"
)

// FuzzValidateAttach: whatever the request, validateAttach does not panic,
// and what it accepts names the container the way the plumbing finds it:
// by container_id alone on Windows (byID), by netns or pid and never by
// container_id elsewhere.
func FuzzValidateAttach(f *testing.F) {
	f.Add("web", "c1", "", 0, "", "c1", true)
	f.Add("web", "c1", "/run/netns/c1", 0, "eth0", "", false)
	f.Add("web", "c1", "", 42, "", "c1", false)
	f.Add("web", "", "/x", 1, "", "3f1c0a", true)
	f.Fuzz(func(t *testing.T, service, container, netns string, pid int, ifname, containerID string, byID bool) {
		req := api.AttachRequest{Service: service, Container: container, Netns: netns, PID: pid, Ifname: ifname, ContainerID: containerID}
		if validateAttach(req, false, byID) != nil {
			return
		}
		switch {
		case byID && (containerID == "" || netns != "" || pid != 0 || ifname != ""):
			t.Fatalf("accepted %+v on a by-id node", req)
		case !byID && (containerID != "" || (netns == "") == (pid == 0)):
			t.Fatalf("accepted %+v on a netns/pid node", req)
		}
	})
}
