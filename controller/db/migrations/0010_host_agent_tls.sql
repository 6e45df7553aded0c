-- Whether the host's agent serves HTTPS with a certificate from the controller's CA (issue 18, security 10):
-- set when the agent is deployed with TLS; 0 for plain-HTTP agents (simulated hosts, agent_tls=false).
ALTER TABLE Host ADD COLUMN agentTls INTEGER NOT NULL DEFAULT 0;
