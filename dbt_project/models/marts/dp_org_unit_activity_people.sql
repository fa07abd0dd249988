-- One row per employee: HR, Finance and IT joined per person, before any aggregation.
-- Read only inside the pipeline: by the person-level re-identification gate and by the OpenDP release of
-- mart_org_unit_activity (employee_key is its privacy unit). Never published to the analysts' database.
-- Finance's and IT's quasi-identifiers are event months: joined per person (the set of months a person claimed
-- or reported in) they single out most people (k = 1 on the demo data, even as 'any incident' or 'claimed this
-- year'), so they are not carried here; the gate measures k over the quasi-identifiers this join does carry.

with employees as (
    select * from {{ ref('stg_hr__employees') }}
),

rates as (
    select * from {{ ref('currency_rates') }}
),

claims_per_employee as (
    select
        claims.employee_key,
        count(*) as expense_claims,
        sum(claims.amount * rates.rate_to_eur) as expense_total_eur
    from {{ ref('stg_finance__expense_claims') }} as claims
    inner join rates on claims.currency = rates.currency
    group by claims.employee_key
),

incidents_per_employee as (
    select
        email_key,
        count(*) as security_incidents,
        count(*) filter (where severity in ('high', 'critical')) as serious_incidents
    from {{ ref('stg_it__security_incidents') }}
    group by email_key
),

per_employee as (
    select
        employees.employee_key,
        employees.org_unit,
        employees.job_family,
        employees.age_band,
        employees.gender,
        coalesce(claims_per_employee.expense_claims, 0)::bigint as expense_claims,
        coalesce(claims_per_employee.expense_total_eur, 0)::double as expense_total_eur,
        coalesce(incidents_per_employee.security_incidents, 0)::bigint as security_incidents,
        coalesce(incidents_per_employee.serious_incidents, 0)::bigint as serious_incidents,
        count(*) over () as population
    from employees
    left join claims_per_employee on employees.employee_key = claims_per_employee.employee_key
    left join incidents_per_employee on employees.email_key = incidents_per_employee.email_key
)

-- no minimum-group filter: a table of people has no groups (the governance check exempts person_level approvals),
-- its risk is the mart gate's k over the quasi-identifiers it carries, and what leaves it is the DP release
select * from per_employee
