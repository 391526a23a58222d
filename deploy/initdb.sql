-- One database per service: in production each would usually be its own server.
CREATE DATABASE lead_partner;
CREATE DATABASE insourcing_partner;
CREATE DATABASE sync_bridge;
