package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// Client talks to one node's control socket. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the control socket at path: a Unix
// socket, or on Windows a named pipe (\\.\pipe\NAME).
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialControl(ctx, path)
		},
		MaxIdleConnsPerHost: 8,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr}}
}

// Socket returns the socket path the client connects to.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Do sends one request with an optional JSON body and decodes a JSON answer
// into out (which may be nil). A non-2xx answer is returned as *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://zlmesh"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(b, e) != nil || e.Code == "" {
		e.Code = CodeInternal
		e.Message = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return e
}

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Peers returns the node's peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var p []Peer
	err := c.Do(ctx, http.MethodGet, "/v1/peers", nil, &p)
	return p, err
}

// Down asks the node to leave the cluster and exit.
func (c *Client) Down(ctx context.Context, req DownRequest) error {
	return c.Do(ctx, http.MethodPost, "/v1/down", req, nil)
}

// Attach attaches a container.
func (c *Client) Attach(ctx context.Context, req AttachRequest) (Attachment, error) {
	var a Attachment
	err := c.Do(ctx, http.MethodPost, "/v1/attach", req, &a)
	return a, err
}

// Detach detaches a container; detaching one that is not attached succeeds.
func (c *Client) Detach(ctx context.Context, container string) error {
	return c.Do(ctx, http.MethodPost, "/v1/detach", DetachRequest{Container: container}, nil)
}

// Attachments lists this node's attachments.
func (c *Client) Attachments(ctx context.Context) ([]Attachment, error) {
	var a []Attachment
	err := c.Do(ctx, http.MethodGet, "/v1/attachments", nil, &a)
	return a, err
}

// Services lists every service endpoint in the cluster.
func (c *Client) Services(ctx context.Context) ([]ServiceEndpoint, error) {
	var s []ServiceEndpoint
	err := c.Do(ctx, http.MethodGet, "/v1/services", nil, &s)
	return s, err
}

// Publish publishes a port.
func (c *Client) Publish(ctx context.Context, req PublishRequest) (PortMapping, error) {
	var p PortMapping
	err := c.Do(ctx, http.MethodPost, "/v1/publish", req, &p)
	return p, err
}

// Unpublish removes a published port.
func (c *Client) Unpublish(ctx context.Context, req UnpublishRequest) error {
	return c.Do(ctx, http.MethodDelete, "/v1/publish", req, nil)
}

// Ports lists every published port in the cluster.
func (c *Client) Ports(ctx context.Context) ([]PortMapping, error) {
	var p []PortMapping
	err := c.Do(ctx, http.MethodGet, "/v1/ports", nil, &p)
	return p, err
}

// Forwards lists the node's inbound forwards (userspace mode).
func (c *Client) Forwards(ctx context.Context) ([]Forward, error) {
	var f []Forward
	err := c.Do(ctx, http.MethodGet, "/v1/forwards", nil, &f)
	return f, err
}

// AddForward adds an inbound forward (userspace mode).
func (c *Client) AddForward(ctx context.Context, f Forward) (Forward, error) {
	var out Forward
	err := c.Do(ctx, http.MethodPost, "/v1/forwards", f, &out)
	return out, err
}

// RemoveForward removes an inbound forward.
func (c *Client) RemoveForward(ctx context.Context, req UnforwardRequest) error {
	return c.Do(ctx, http.MethodDelete, "/v1/forwards", req, nil)
}

// AddGuest adds a guest.
func (c *Client) AddGuest(ctx context.Context, req GuestRequest) (Guest, error) {
	var g Guest
	err := c.Do(ctx, http.MethodPost, "/v1/guests", req, &g)
	return g, err
}

// Guests lists this node's guests.
func (c *Client) Guests(ctx context.Context) ([]Guest, error) {
	var g []Guest
	err := c.Do(ctx, http.MethodGet, "/v1/guests", nil, &g)
	return g, err
}

// RemoveGuest removes a guest; CodeNotFound when there is none of that name.
func (c *Client) RemoveGuest(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/guests/"+url.PathEscape(name), nil, nil)
}

// Events streams events to fn until ctx ends, the stream ends, or fn returns
// an error (which Events returns). A stream ended by ctx returns ctx.Err().
func (c *Client) Events(ctx context.Context, fn func(Event) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://zlmesh/v1/events", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("event stream: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("event stream: %w", err)
	}
	return nil
}
