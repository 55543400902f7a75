package dockerplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// DefaultDockerSocket is dockerd's API socket.
const DefaultDockerSocket = "/run/docker.sock"

// EngineAPI is DockerAPI over dockerd's unix socket (GET /networks/{id}
// of the engine API, which Docker 20.10 serves as version 1.41).
type EngineAPI struct {
	client *http.Client
}

// NewEngineAPI talks to the engine API at socket ("" is DefaultDockerSocket).
func NewEngineAPI(socket string) *EngineAPI {
	if socket == "" {
		socket = DefaultDockerSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 2,
	}
	return &EngineAPI{client: &http.Client{Transport: tr, Timeout: 15 * time.Second}}
}

// networkInspect is the part of GET /networks/{id} the plugin reads.
type networkInspect struct {
	Name       string
	Containers map[string]struct {
		EndpointID string
	}
}

func (e *EngineAPI) inspect(ctx context.Context, id string) (networkInspect, error) {
	var out networkInspect
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/v1.41/networks/"+url.PathEscape(id), nil)
	if err != nil {
		return out, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return out, fmt.Errorf("docker engine API: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return out, fmt.Errorf("network %s: %w", short(id), ErrNoNetwork)
	case resp.StatusCode != http.StatusOK:
		return out, fmt.Errorf("docker engine API: GET /networks/%s: %s: %.200s", short(id), resp.Status, body)
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("docker engine API: network %s: %v", short(id), err)
	}
	return out, nil
}

// NetworkName implements DockerAPI.
func (e *EngineAPI) NetworkName(ctx context.Context, id string) (string, error) {
	n, err := e.inspect(ctx, id)
	return n.Name, err
}

// NetworkEndpoints implements DockerAPI.
func (e *EngineAPI) NetworkEndpoints(ctx context.Context, id string) ([]string, error) {
	n, err := e.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range n.Containers {
		out = append(out, c.EndpointID)
	}
	return out, nil
}
