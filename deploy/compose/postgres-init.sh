#!/usr/bin/env bash
# One PostgreSQL role per MKR service, owning only its own database (docker-compose.yml).
#
# Runs by itself when the volume is first initialised (/docker-entrypoint-initdb.d). For a volume
# created before per-service roles, run it once by hand; it is idempotent and hands the existing
# databases and their objects over to the roles:
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/10-mkr-roles.sh
#
# Each role: LOGIN, no SUPERUSER/CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS, owner of mkr_<service>,
# and no CONNECT on any other database (PUBLIC loses CONNECT on all of them). The administrator
# ($POSTGRES_USER) is never given to a service.
set -euo pipefail

admin=(psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER")

prefix="${DB_PREFIX:-mkr_}"  # the services' MKR_DATABASE_PREFIX

for service in intake referral shelter notifications; do
  variable="DB_PASSWORD_${service^^}"
  password="${!variable:?$variable is not set}"
  role="${prefix}${service}"
  database="${prefix}${service}"

  "${admin[@]}" --dbname postgres -v role="$role" -v password="$password" -v database="$database" <<'SQL'
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format(
  'ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT '
  'CONNECTION LIMIT 200 PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'database', :'role') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'database') \gexec
SQL

  # A database created earlier by the shared administrator: its schema and objects go to the role.
  "${admin[@]}" --dbname "$database" -v role="$role" <<'SQL'
SELECT format('ALTER SCHEMA public OWNER TO %I', :'role') \gexec
SELECT format('ALTER TABLE public.%I OWNER TO %I', tablename, :'role') FROM pg_tables WHERE schemaname = 'public' \gexec
SELECT format('ALTER VIEW public.%I OWNER TO %I', viewname, :'role') FROM pg_views WHERE schemaname = 'public' \gexec
SELECT format('ALTER SEQUENCE public.%I OWNER TO %I', s.relname, :'role')
  FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
  WHERE n.nspname = 'public' AND s.relkind = 'S'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = s.oid AND d.deptype IN ('a', 'i')) \gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'role')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = 'public' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') \gexec
SELECT format('ALTER TYPE %s OWNER TO %I', t.oid::regtype, :'role')
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e') \gexec
SQL
done

# Intake's key store (services/intake/keystore.py: the per-case data keys and erasure tombstones), a
# database apart from intake's data so that no data backup holds key material: owned by intake's role
# (the only one that reads it; the default MKR_KEYSTORE_URL is intake's URL with this database).
"${admin[@]}" --dbname postgres -v role="${prefix}intake" -v database="${prefix}keys" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'database', :'role') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'database') \gexec
SQL
"${admin[@]}" --dbname "${prefix}keys" -v role="${prefix}intake" <<'SQL'
SELECT format('ALTER SCHEMA public OWNER TO %I', :'role') \gexec
SELECT format('ALTER TABLE public.%I OWNER TO %I', tablename, :'role') FROM pg_tables WHERE schemaname = 'public' \gexec
SQL

# No service role may even connect to the maintenance databases.
"${admin[@]}" --dbname postgres -c 'REVOKE ALL ON DATABASE postgres FROM PUBLIC' -c 'REVOKE ALL ON DATABASE template1 FROM PUBLIC'
