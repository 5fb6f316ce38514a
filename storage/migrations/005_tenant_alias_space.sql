-- The alias space is split by tenant (docs/tenancy.md): a tenant's aliases are
-- `#<slug>.<name>:server`, the slug being the tenant id with '=' written '=3d' and '.'
-- written '=2e'; every other alias is in the plain part, which belongs to rooms without a
-- tenant. Aliases made before the split are put where their room now says they belong:
-- a tenant room's alias outside its tenant's part gets the slug in front (`#lobby` ->
-- `#acme.lobby`); an alias of a room without a tenant that falls in a tenant's part is
-- removed (it would squat that tenant's name), as is an old alias whose new place is
-- already taken. Aliases made by application-service users (their exclusive namespaces,
-- e.g. the ERP bridge's) are the services' own and stay as they are. Only data changes,
-- so running this again changes nothing.

CREATE TEMPORARY TABLE misplaced_aliases ON COMMIT DROP AS
WITH placed AS (
    SELECT a.room_alias, r.tenant_id AS room_tenant,
           split_part(substr(a.room_alias, 2), ':', 1) AS localpart,
           substr(a.room_alias, strpos(a.room_alias, ':')) AS server_part,
           substring(split_part(substr(a.room_alias, 2), ':', 1)
                     FROM '^((?:[A-Za-z0-9_-]|=2e|=3d)+)\.') AS slug
    FROM room_aliases a
    JOIN rooms r USING (room_id)
    LEFT JOIN users u ON u.user_id = a.creator
    WHERE u.appservice_id IS NULL
), parted AS (
    SELECT *, CASE WHEN slug IS NOT NULL
                    AND length(slug) - 2 * (length(slug) - length(replace(slug, '=', ''))) <= 64
                   THEN replace(replace(slug, '=2e', '.'), '=3d', '=') END AS part_tenant
    FROM placed
)
SELECT room_alias,
       CASE WHEN room_tenant IS NOT NULL
            THEN '#' || replace(replace(room_tenant, '=', '=3d'), '.', '=2e') || '.' || localpart || server_part
       END AS new_alias
FROM parted
WHERE part_tenant IS DISTINCT FROM room_tenant;

DELETE FROM room_aliases a USING misplaced_aliases m
WHERE a.room_alias = m.room_alias
  AND (m.new_alias IS NULL OR EXISTS (SELECT 1 FROM room_aliases b WHERE b.room_alias = m.new_alias));

UPDATE room_aliases a SET room_alias = m.new_alias
FROM misplaced_aliases m
WHERE a.room_alias = m.room_alias;
