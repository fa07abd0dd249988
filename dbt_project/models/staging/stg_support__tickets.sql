with source as (
    select * from {{ source('deidentified', 'support_tickets') }}
),

renamed as (
    select
        ticket_id,
        customer_email as customer_key,
        postcode as postcode_prefix,
        opened_at as opened_month,
        product,
        satisfaction
    from source
)

select * from renamed
