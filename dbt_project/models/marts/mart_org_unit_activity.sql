-- Expenses and security incidents per org unit and job family.
-- Joins HR, Finance and IT on keyed pseudonyms only; groups smaller than the approved minimum are withheld.

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
        employees.org_unit,
        employees.job_family,
        employees.employee_key,
        coalesce(claims_per_employee.expense_claims, 0) as expense_claims,
        coalesce(claims_per_employee.expense_total_eur, 0) as expense_total_eur,
        coalesce(incidents_per_employee.security_incidents, 0) as security_incidents,
        coalesce(incidents_per_employee.serious_incidents, 0) as serious_incidents
    from employees
    left join claims_per_employee on employees.employee_key = claims_per_employee.employee_key
    left join incidents_per_employee on employees.email_key = incidents_per_employee.email_key
),

aggregated as (
    select
        org_unit,
        job_family,
        count(distinct employee_key) as headcount,
        sum(expense_claims)::bigint as expense_claims,
        round(sum(expense_total_eur), 2)::decimal(18, 2) as expense_total_eur,
        sum(security_incidents)::bigint as security_incidents,
        sum(serious_incidents)::bigint as serious_incidents
    from per_employee
    group by org_unit, job_family
)

select * from aggregated
where headcount >= {{ approved_min_group_size() }}
