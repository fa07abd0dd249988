with source as (
    select * from {{ source('deidentified', 'it_security_incidents') }}
),

renamed as (
    select
        incident_id,
        reporter_email as email_key,
        host as host_key,
        reported_at as reported_month,
        category,
        severity,
        description as description_masked
    from source
)

select * from renamed
