with source as (
    select * from {{ source('deidentified', 'hr_employees') }}
),

renamed as (
    select
        -- keys (keyed pseudonyms)
        employee_id as employee_key,
        email as email_key,
        -- generalized quasi-identifiers
        date_of_birth as age_band,
        gender,
        job_title as job_family,
        org_unit,
        -- attributes
        salary as salary_band
    from source
)

select * from renamed
