package node

import (
	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/bridge"
)

// validateAttachByID checks the form of an attach on a node that finds
// containers by their runtime's id (Windows): container_id, and neither
// netns nor pid nor ifname (HCN names the container's interface).
func validateAttachByID(req api.AttachRequest) error {
	switch {
	case req.ContainerID == "":
		return api.Errorf(api.CodeBadRequest, "give the container's id as container_id: this node attaches Windows containers by id, not by netns or pid")
	case req.Netns != "" || req.PID != 0:
		return api.Errorf(api.CodeBadRequest, "give container_id only: netns and pid are Linux's, this node attaches Windows containers by id")
	case req.Ifname != "":
		return api.Errorf(api.CodeBadRequest, "ifname is not supported for a Windows container (HCN names its interface)")
	}
	if err := bridge.ValidateContainer(req.ContainerID); err != nil {
		return api.Errorf(api.CodeBadRequest, "container_id: %v", err)
	}
	return nil
}
